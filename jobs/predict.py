"""Score a Delta table with one registered model version (on the driver or an actor pool); one idempotent commit.

    ray job submit --working-dir . -- python jobs/predict.py --spec mlray.yaml --model champion \
        --table transactions --out transactions_scored

Exit codes: 0 done (a re-run of the same version on the same snapshot writes nothing), 2 user error.
"""

import sys

from mlray.entrypoint import DONE, exit_with, job_parser, run_job


def predict(spec, args):
    from mlray.batch.predict import predict_table

    return predict_table(spec, args.model, args.table, args.out, args.version, execution=args.execution).__dict__, DONE


def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--model", required=True, help="NAME@ALIAS, NAME/VERSION, an alias or a version number.")
    parser.add_argument("--table", required=True, help="Delta table to score.")
    parser.add_argument("--out", required=True, help="Delta table the predictions go to (created if missing).")
    parser.add_argument("--version", type=int, help="Version of the input table (default: the latest).")
    parser.add_argument("--execution", choices=["auto", "local", "ray"], default="auto",
                        help="local: score in the job's process; ray: on an actor pool; auto: local up to 2M rows.")
    return run_job(parser, predict, argv)


if __name__ == "__main__":
    exit_with(main(sys.argv[1:]))
