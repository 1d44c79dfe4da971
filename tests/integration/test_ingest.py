"""Ingestion through Ray Data into Delta: exactly once, quarantine with reasons, nothing half-done."""

import json

import pyarrow as pa
import pyarrow.csv as pacsv
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


# --------------------------------------------------------------------------- hostile lines: quarantined, the rest lands


def _json_line(row: dict, **changes) -> bytes:
    return json.dumps({**row, **changes}, default=str).encode()


def _hostile(row: dict) -> dict[str, tuple[bytes, str]]:
    """Bad JSON lines (made from a good row where a value is the problem) and what their reason says."""
    nan, inf = float("nan"), float("inf")
    return {
        "deep_array": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        "deep_object": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply"),
        "invalid_utf8": (b'{"transaction_id": "\xff\xfe"}', "invalid UTF-8 (byte 0xff at position 20)"),
        "lone_surrogate": (_json_line(row, customer_id="\ud800"), "invalid Unicode (an unpaired surrogate escape)"),
        "array": (b"[1, 2]", "not a JSON object (a JSON array)"),
        "string": (b'"x"', "not a JSON object (a JSON string)"),
        "number": (b"3", "not a JSON object (a JSON number)"),
        "int_beyond_int64": (_json_line(row, customer_age=2**70),
                             "customer_age: '1180591620717411303424' is out of range for a 64-bit integer"),
        "float_literal_overflow": (_json_line(row, amount=inf).replace(b"Infinity", b"1e400"),
                                   "amount: 'inf' is out of range for a 64-bit float"),
        "float_text_overflow": (_json_line(row, amount="1e400"), "amount: '1e400' is out of range for a 64-bit float"),
        "infinity": (_json_line(row, amount=inf), "amount: 'inf' is out of range for a 64-bit float"),
        "nan": (_json_line(row, amount=nan), "amount: 'nan' is not a number"),
        "int_of_5000_digits": (b'{"amount": ' + b"9" * 5000 + b"}", "cannot be parsed (Exceeds the limit (4300 digits)"),
        "huge_string": (_json_line(row, customer_age="x" * 2_000_000), "customer_age: 'xxx"),
    }


@pytest.mark.parametrize("case", list(_hostile({})))
def test_a_hostile_json_line_is_quarantined_with_its_reason_and_the_rest_lands(project, transactions, tmp_path, case):
    good = [_json_line(row) for row in transactions.slice(0, 4).to_pylist()]
    bad, reason = _hostile(transactions.slice(4, 1).to_pylist()[0])[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_bytes(b"\n".join([bad, good[0], good[1], bad, good[2], good[3]]) + b"\n")  # first: the file's inspection

    report = dataplane.ingest_source(project, path)
    assert (report.rows_read, report.rows_landed, report.rows_quarantined) == (6, 4, 2)
    lake = dataplane.lake_of(project)
    assert lake.read("transactions").column("transaction_id").to_pylist() == transactions.column("transaction_id")[:4].to_pylist()
    reasons = sorted(lake.read("transactions_quarantine").column("_reason").to_pylist())
    assert all(reason in found for found in reasons), reasons[0][:300]
    assert all(len(found) <= ingest_module.MAX_REASON + 1 for found in reasons)  # a huge value is quoted cut short
    if reasons[0].startswith("line "):  # a line that does not parse: its number, and the line as text
        assert [r.split(":")[0] for r in reasons] == ["line 1", "line 4"]
        raws = lake.read("transactions_quarantine").column("_raw").to_pylist()
        assert raws == [bad.decode("utf-8", "backslashreplace")] * 2


def test_blank_lines_are_skipped_and_lines_split_on_newlines_only(project, transactions, tmp_path):
    rows = transactions.slice(0, 2).to_pylist()
    path = tmp_path / "gaps.jsonl"
    path.write_bytes(b"\n".join([_json_line(rows[0]), b"", b"  \t\r", b"{broken",
                                 json.dumps({**rows[1], "customer_id": "a\u2028b\x85c"}, default=str, ensure_ascii=False)
                                 .encode()]) + b"\r\n")
    report = dataplane.ingest_source(project, path)
    assert (report.rows_read, report.rows_landed, report.rows_quarantined) == (3, 2, 1)
    lake = dataplane.lake_of(project)
    assert lake.read("transactions").column("customer_id").to_pylist()[1] == "a\u2028b\x85c"
    assert lake.read("transactions_quarantine").column("_reason").to_pylist() == [
        "line 4: not valid JSON (Expecting property name enclosed in double quotes)"]


def test_a_json_file_whose_first_lines_are_all_bad_still_lands_its_good_lines(project, transactions, tmp_path):
    path = tmp_path / "late.jsonl"
    good = _json_line(transactions.slice(0, 1).to_pylist()[0])
    path.write_bytes(b"\n".join([b"{}"] + [b"[1]"] * ingest_module.INSPECT_LINES + [good]) + b"\n")
    report = dataplane.ingest_source(project, path)
    assert (report.rows_landed, report.rows_quarantined) == (1, ingest_module.INSPECT_LINES + 1)
    reasons = dataplane.lake_of(project).read("transactions_quarantine").column("_reason").to_pylist()
    assert sum("not a JSON object (a JSON array)" in r for r in reasons) == ingest_module.INSPECT_LINES
    assert sum("transaction_id: missing value" in r for r in reasons) == 1  # {} is an object, without its values


def test_hostile_csv_rows_are_quarantined_with_their_reasons_and_the_rest_lands(project, transactions, tmp_path):
    path = tmp_path / "day.csv"
    pacsv.write_csv(transactions.slice(0, 6), path, pacsv.WriteOptions(quoting_style="none"))
    header, *lines = path.read_bytes().replace(b'"', b"").splitlines()
    first = lines[0].split(b",")
    amount, age = header.split(b",").index(b"amount"), header.split(b",").index(b"customer_age")
    bad = [b",".join(first[:2] + [b"cust\xff\xfe"] + first[3:]),  # customer_id
           lines[1] + b",surplus",
           b",".join(first[:amount] + [b"1e400"] + first[amount + 1:]),
           b",".join(first[:age] + [b"99999999999999999999"] + first[age + 1:])]
    path.write_bytes(b"\n".join([header, lines[0], bad[0], lines[2], bad[1], lines[3], bad[2], bad[3], *lines[4:]]) + b"\n")

    report = dataplane.ingest_source(project, path)
    assert (report.rows_read, report.rows_landed, report.rows_quarantined) == (9, 5, 4)
    quarantine = dataplane.lake_of(project).read("transactions_quarantine")
    assert sorted(quarantine.column("_reason").to_pylist()) == [
        "amount: '1e400' is out of range for a 64-bit float",
        "customer_age: '99999999999999999999' is out of range for a 64-bit integer",
        "customer_id: invalid UTF-8 (byte 0xff at position 4)",
        "row 5: expected 13 fields, found 14"]
    assert "cust\\xff\\xfe" in quarantine.column("customer_id").to_pylist()  # bad bytes kept, escaped
    assert lines[1].decode() + ",surplus" in quarantine.column("_raw").to_pylist()


def test_a_parquet_text_column_with_bad_bytes_quarantines_those_rows_only(project, transactions, tmp_path):
    rows = transactions.slice(0, 4)
    ids = [v.encode() for v in rows.column("customer_id").to_pylist()]
    ids[2] = b"\xc3\x28"
    path = tmp_path / "day.parquet"
    pq.write_table(rows.set_column(rows.column_names.index("customer_id"), "customer_id", pa.array(ids, pa.binary())), path)
    report = dataplane.ingest_source(project, path)
    assert (report.rows_landed, report.rows_quarantined) == (3, 1)
    lake = dataplane.lake_of(project)
    assert lake.read("transactions").column("customer_id").to_pylist() == [v.decode() for i, v in enumerate(ids) if i != 2]
    assert lake.read("transactions_quarantine").column("_reason").to_pylist() == [
        "customer_id: invalid UTF-8 (byte 0xc3 at position 0)"]


def test_a_ragged_csv_row_with_bad_bytes_fails_its_file_in_one_line(project, transactions, tmp_path):
    """The one hostile row Arrow's CSV reader cannot hand over (it decodes a skipped row's text): the file fails,
    saying which and why."""
    path = tmp_path / "day.csv"
    pacsv.write_csv(transactions.slice(0, 3), path, pacsv.WriteOptions(quoting_style="none"))
    header, *lines = path.read_bytes().replace(b'"', b"").splitlines()
    path.write_bytes(b"\n".join([header, lines[0], lines[1] + b",\xff", lines[2]]) + b"\n")
    with pytest.raises(UserError, match=r"day.csv: cannot be ingested \(CSV parse error: Row #3: Expected 13 columns, "
                                        r"got 14: .*\); nothing from this file was committed") as failed:
        dataplane.ingest_source(project, path)
    assert "\n" not in str(failed.value)
    assert dataplane.lake_of(project).read("transactions").num_rows == 0
