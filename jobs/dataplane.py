"""The data plane in one job: ingest (optional) → validate → fit features.

    ray job submit --working-dir . -- python jobs/dataplane.py --spec mlray.yaml --source s3://bucket/landing/

Exit codes: 0 done, 1 validation failed (features are not fitted then), 2 user error.
"""

import sys

from mlray import dataplane
from mlray.entrypoint import CHECK_FAILED, DONE, exit_with, job_parser, run_job


def data_plane(spec, args):
    summary: dict = {"spec": str(spec.path)}
    if args.source:
        summary["ingest"] = dataplane.ingest_source(spec, args.source, args.table).to_dict()
    report, path = dataplane.validate_table(spec, args.table)
    summary["validation"] = {**report.to_dict(), "report": str(path)}
    if report.passed and args.table in (None, spec.data.train_table):
        fitted = dataplane.fit_features(spec, report.version, require_valid=False)
        summary["features"] = {"feature_version": fitted.version, "table_version": fitted.lineage.table_version}
    return summary, DONE if report.passed else CHECK_FAILED


def main(argv=None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--source", help="File or landing folder to ingest first.")
    parser.add_argument("--table", help="Table (default: data.train_table).")
    return run_job(parser, data_plane, argv)


if __name__ == "__main__":
    exit_with(main(sys.argv[1:]))
