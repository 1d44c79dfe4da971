"""Sweep the spec's tune.space with Ray Tune (each trial a Ray Train run); register the best trial through the gate.

    ray job submit --working-dir . -- python jobs/tune.py --spec mlray.yaml [--version N] [--name SWEEP]

Exit codes: 0 the best trial was registered, 1 the gate rejected it, 2 user error.
"""

import sys
from dataclasses import asdict

from mlray.entrypoint import CHECK_FAILED, DONE, exit_with, job_parser, run_job


def tune(spec, args):
    from mlray.training import tune as tune_and_admit

    outcome = tune_and_admit(spec, version=args.version, sweep=args.name)
    return asdict(outcome), CHECK_FAILED if outcome.model.decision == "rejected" else DONE


def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--version", type=int, help="Version of the train table (default: the latest).")
    parser.add_argument("--name", help="Sweep name (default: <project>-sweep-<UTC time>).")
    return run_job(parser, tune, argv)


if __name__ == "__main__":
    exit_with(main(sys.argv[1:]))
