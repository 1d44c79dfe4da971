"""`ray job submit` entrypoint for the data plane: ingest (optional) → validate → fit features.

    ray job submit --working-dir . -- python jobs/dataplane.py --spec mlray.yaml --source s3://bucket/landing/

Prints one JSON summary on stdout. Exit codes: 0 done, 1 validation failed, 2 user error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mlray import dataplane
from mlray.errors import UserError
from mlray.runtime import connect
from mlray.spec import load_spec


def run(spec_path: str | None, source: str | None, table: str | None) -> int:
    spec = load_spec(spec_path)
    connect(spec.platform)
    summary: dict = {"spec": str(spec.path)}
    if source:
        summary["ingest"] = dataplane.ingest_source(spec, source, table).to_dict()
    report, path = dataplane.validate_table(spec, table)
    summary["validation"] = {**report.to_dict(), "report": str(path)}
    if report.passed and (table is None or table == spec.data.train_table):
        fitted = dataplane.fit_features(spec, report.version, require_valid=False)
        summary["features"] = {"feature_version": fitted.version, "table_version": fitted.lineage.table_version}
    print(json.dumps(summary, indent=2, default=str))
    return 0 if report.passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", help="Project spec (default: $MLRAY_SPEC or ./mlray.yaml).")
    parser.add_argument("--source", help="File or landing folder to ingest first.")
    parser.add_argument("--table", help="Table (default: data.train_table).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args.spec, args.source, args.table)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
