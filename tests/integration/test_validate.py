"""`validate` over pinned snapshots with Ray Data."""

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from mlray import dataplane
from mlray.errors import UserError


@pytest.fixture
def loaded(project, load_transactions):
    return project, load_transactions(2000, seed=5)


def checks_of(report):
    return {c.name: c for c in report.checks}


def test_clean_table_passes_and_the_report_is_written(loaded):
    project, _ = loaded
    report, path = dataplane.validate_table(project)
    assert report.passed, report.summary()
    assert report.rows == 2000 and report.version == 1
    assert path.is_file() and '"passed": true' in path.read_text()


def test_duplicates_ranges_and_the_pinned_version(loaded):
    project, lake = loaded
    table = lake.read("transactions")
    bad = table.slice(0, 3).set_column(3, "amount", pa.array([-1.0, -2.0, 5.0]))  # 3 duplicate ids, 2 negative
    lake.append("transactions", bad, batch_id="dupes")
    report, _ = dataplane.validate_table(project)
    checks = checks_of(report)
    assert not report.passed
    assert checks["transaction_id: unique"].failing == 3
    assert set(checks["transaction_id: unique"].examples) <= set(table.column("transaction_id")[:3].to_pylist())
    assert checks["amount: min"].failing == 2 and checks["amount: min"].examples == ["-1", "-2"]
    assert checks["customer_age: max"].passed
    pinned, _ = dataplane.validate_table(project, version=1)
    assert pinned.passed and pinned.version == 1


def test_staleness_and_minimum_rows(loaded, starter_text, tmp_path):
    from mlray.spec import load_spec

    project, lake = loaded
    report = dataplane.validate(lake, "transactions", project.train_table,
                                now=datetime.now(timezone.utc) + timedelta(days=60))
    assert not checks_of(report)["event_time: fresh"].passed
    spec_file = tmp_path / "strict.yaml"
    spec_file.write_text(starter_text.replace("min_rows: 1000", "min_rows: 5000"))
    strict = load_spec(spec_file)
    report = dataplane.validate(lake, "transactions", strict.train_table)
    assert not checks_of(report)["rows"].passed


def test_a_table_with_another_schema_fails_the_schema_check(project):
    lake = dataplane.lake_of(project)
    lake.append("transactions", pa.table({"transaction_id": ["a"]}), schema=pa.schema([("transaction_id", pa.string())]))
    report, _ = dataplane.validate_table(project)
    assert [c.name for c in report.failures] == ["schema"]
    assert "missing columns event_time" in report.failures[0].examples[0]


def test_undeclared_table_is_a_user_error(project):
    with pytest.raises(UserError, match="table 'payments' is not declared"):
        dataplane.validate_table(project, "payments")
