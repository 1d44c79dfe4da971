"""Check a table's expectations on one pinned version and write the validation report.

    ray job submit --working-dir . -- python jobs/validate.py --spec mlray.yaml [--table T] [--version N]

Exit codes: 0 every expectation holds, 1 one failed, 2 user error.
"""

import sys

from mlray import dataplane
from mlray.entrypoint import CHECK_FAILED, DONE, exit_with, job_parser, run_job


def validate(spec, args):
    report, path = dataplane.validate_table(spec, args.table, args.version)
    return {**report.to_dict(), "report": str(path)}, DONE if report.passed else CHECK_FAILED


def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--table", help="Table (default: data.train_table).")
    parser.add_argument("--version", type=int, help="Table version (default: the latest).")
    return run_job(parser, validate, argv)


if __name__ == "__main__":
    exit_with(main(sys.argv[1:]))
