"""Ingestion through Ray Data into Delta: exactly once, quarantine with reasons, nothing half-done."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlray import dataplane
from mlray.errors import UserError
from mlray.lake import ingest as ingest_module
from mlray.lake.synthetic import corrupt, generate_transactions, write_source_file


@pytest.fixture
def transactions():
    return generate_transactions(3000, seed=11)


def test_three_formats_land_and_counts_add_up(project, transactions, tmp_path):
    landing = tmp_path / "landing"
    write_source_file(corrupt(transactions.slice(0, 1000), 0.05, seed=1), landing / "a.csv")
    write_source_file(transactions.slice(1000, 1000), landing / "b.parquet")
    write_source_file(corrupt(transactions.slice(2000), 0.05, seed=2), landing / "c.jsonl")
    with (landing / "c.jsonl").open("a") as handle:
        handle.write("{broken json\n\n")

    report = dataplane.ingest_source(project, landing)
    assert [f.status for f in report.files] == ["ingested"] * 3
    assert report.rows_read == 3001
    assert report.rows_landed + report.rows_quarantined == report.rows_read
    assert report.files[1].rows_quarantined == 0
    assert 0 < report.files[0].rows_quarantined < 100

    lake = dataplane.lake_of(project)
    assert lake.read("transactions").num_rows == report.rows_landed
    quarantine = lake.read("transactions_quarantine")
    assert quarantine.num_rows == report.rows_quarantined
    assert all(quarantine.column("_reason").to_pylist())
    broken = quarantine.filter(pa.compute.is_valid(quarantine.column("_raw")))
    assert broken.column("_raw").to_pylist() == ["{broken json"]
    assert "not valid JSON" in broken.column("_reason")[0].as_py()
    # quarantined rows keep their raw values: a bad amount is still readable as text
    bad_amounts = quarantine.filter(pa.compute.match_substring(quarantine.column("_reason"), "amount: 'n/a'"))
    assert set(bad_amounts.column("amount").to_pylist()) <= {"n/a"}


def test_ingesting_again_changes_nothing(project, transactions, tmp_path):
    path = tmp_path / "day.csv"
    write_source_file(transactions, path)
    first = dataplane.ingest_source(project, path)
    lake = dataplane.lake_of(project)
    version = lake.latest_version("transactions")
    again = dataplane.ingest_source(project, path)
    copy = tmp_path / "copy" / "same-content.csv"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    renamed = dataplane.ingest_source(project, copy)
    assert first.rows_landed == 3000
    assert [f.status for f in again.files + renamed.files] == ["skipped", "skipped"]
    assert lake.latest_version("transactions") == version
    assert lake.read("transactions").num_rows == 3000


def test_wrong_columns_and_unreadable_files_commit_nothing(project, transactions, tmp_path):
    landing = tmp_path / "landing"
    write_source_file(transactions.slice(0, 10), landing / "a_good.csv")
    write_source_file(transactions.slice(10, 10).drop_columns(["amount"]), landing / "b_missing.csv")
    with pytest.raises(UserError, match=r"b_missing.csv: columns do not match table 'transactions': missing columns amount"):
        dataplane.ingest_source(project, landing)
    assert not dataplane.lake_of(project).exists("transactions")

    (landing / "b_missing.csv").unlink()
    (landing / "c_garbage.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(UserError, match=r"c_garbage.parquet: cannot be read as parquet"):
        dataplane.ingest_source(project, landing)
    with pytest.raises(UserError, match="no such file or folder"):
        dataplane.ingest_source(project, tmp_path / "nowhere.csv")
    extra = transactions.slice(0, 5).append_column("surprise", pa.array([1] * 5))
    write_source_file(extra, tmp_path / "extra.parquet")
    with pytest.raises(UserError, match="unexpected columns surprise"):
        dataplane.ingest_source(project, tmp_path / "extra.parquet")


def test_a_crash_between_the_two_commits_is_finished_by_the_rerun(project, transactions, tmp_path, monkeypatch):
    path = tmp_path / "day.jsonl"
    write_source_file(corrupt(transactions.slice(0, 500), 0.1, seed=3), path)
    real_append = dataplane.Lake.append

    def crash_on_quarantine(self, name, data, **kwargs):
        if name.endswith("_quarantine"):
            raise KeyboardInterrupt("killed between commits")
        return real_append(self, name, data, **kwargs)

    monkeypatch.setattr(dataplane.Lake, "append", crash_on_quarantine)
    with pytest.raises(KeyboardInterrupt):
        dataplane.ingest_source(project, path)
    monkeypatch.setattr(dataplane.Lake, "append", real_append)

    lake = dataplane.lake_of(project)
    landed = lake.read("transactions").num_rows
    assert lake.read("transactions_quarantine").num_rows == 0
    rerun = dataplane.ingest_source(project, path)
    assert rerun.files[0].rows_landed == landed  # counted again, but not committed again
    assert lake.read("transactions").num_rows == landed
    assert lake.read("transactions_quarantine").num_rows == 500 - landed


def test_a_file_failing_mid_stream_commits_nothing(project, transactions, tmp_path, monkeypatch):
    path = tmp_path / "day.parquet"
    pq.write_table(transactions, path, row_group_size=500)
    real_check = ingest_module.check_batch
    calls = {"n": 0}

    def failing_check(batch, table):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("disk went away")
        return real_check(batch, table)

    monkeypatch.setattr(ingest_module, "_read", lambda source, table: _local_read(source, failing_check, table))
    with pytest.raises(UserError, match="day.parquet: cannot be ingested .*nothing from this file was committed"):
        dataplane.ingest_source(project, path)
    lake = dataplane.lake_of(project)
    assert lake.read("transactions").num_rows == 0
    found = ingest_module.discover(path)[0]
    assert not lake.committed("transactions", f"ingest:{ingest_module.fingerprint(found)}")


class _local_read:
    """The read stage with a check that fails on its second batch (in-process, so the monkeypatch holds)."""

    def __init__(self, source, check, table):
        self.source, self.check, self.table = source, check, table

    def iter_batches(self, **_):
        for batch in pq.ParquetFile(self.source.path).iter_batches(batch_size=500):
            yield self.check(pa.Table.from_batches([batch]), self.table)


def test_json_lines_may_omit_null_fields(project, transactions, tmp_path):
    path = tmp_path / "sparse.jsonl"
    rows = transactions.slice(0, 3).to_pylist()
    with path.open("w") as handle:
        for row in rows:
            row["merchant_category"] = None
            handle.write(json.dumps({k: v for k, v in row.items() if v is not None}, default=str) + "\n")
    report = dataplane.ingest_source(project, path)
    assert report.rows_landed == 3
    assert dataplane.lake_of(project).read("transactions").column("merchant_category").null_count == 3


def test_empty_files_are_recorded_as_ingested(project, transactions, tmp_path):
    landing = tmp_path / "landing"
    write_source_file(transactions.slice(0, 0), landing / "a.csv")
    write_source_file(transactions.slice(0, 0), landing / "b.parquet")
    (landing / "c.jsonl").write_text("\n")
    report = dataplane.ingest_source(project, landing)
    assert [(f.status, f.rows_read) for f in report.files] == [("ingested", 0)] * 3
    again = dataplane.ingest_source(project, landing)
    assert [f.status for f in again.files] == ["skipped"] * 3
