"""Ingest a file or a landing folder into a Delta table, each file exactly once; bad rows go to quarantine.

    ray job submit --working-dir . -- python jobs/ingest.py --spec mlray.yaml --source s3://bucket/landing/

Exit codes: 0 done (quarantined rows are reported, not a failure), 2 user error.
"""

import sys

from mlray import dataplane
from mlray.entrypoint import DONE, exit_with, job_parser, run_job


def ingest(spec, args):
    report = dataplane.ingest_source(spec, args.source, args.table)
    return report.to_dict(), DONE


def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--source", required=True, help="A CSV, Parquet or JSON-lines file, or a landing folder.")
    parser.add_argument("--table", help="Target table (default: data.train_table).")
    return run_job(parser, ingest, argv)


if __name__ == "__main__":
    exit_with(main(sys.argv[1:]))
