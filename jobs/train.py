"""Train the spec's model with Ray Train on a pinned, validated snapshot; track in MLflow, register, gate.

    ray job submit --working-dir . -- python jobs/train.py --spec mlray.yaml [--version N] [--run-name NAME]

A run re-submitted with the same --run-name resumes from its last checkpoint.
Exit codes: 0 registered (champion or challenger), 1 the gate rejected it, 2 user error.
"""

import sys

from mlray.entrypoint import CHECK_FAILED, DONE, exit_with, job_parser, run_job


def train(spec, args):
    from mlray.training import train as train_and_admit

    outcome = train_and_admit(spec, version=args.version, run_name=args.run_name)
    return outcome.__dict__, CHECK_FAILED if outcome.decision == "rejected" else DONE


def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--version", type=int, help="Version of the train table (default: the latest).")
    parser.add_argument("--run-name", help="MLflow run name (default: derived from the project and table version).")
    return run_job(parser, train, argv)


if __name__ == "__main__":
    exit_with(main(sys.argv[1:]))
