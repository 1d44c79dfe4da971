"""Reading landing files without Ray: what the inspection of a file's first lines makes of hostile bytes."""

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from mlray.errors import UserError
from mlray.lake import ingest, landing


def found(path):
    return ingest.Found(str(path), str(path), pafs.LocalFileSystem())


def test_a_csv_header_that_is_not_utf8_fails_the_file_naming_it(project, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"transaction_id,\xff\n1,2\n")
    with pytest.raises(UserError, match=r"bad.csv: cannot be read as csv: 'utf-8' codec can't decode byte 0xff"):
        ingest.inspect(found(path), project.train_table, "transactions")


def test_a_csv_header_is_read_alone_and_may_start_with_a_byte_order_mark(project, tmp_path):
    path = tmp_path / "day.csv"
    columns = list(project.train_table.columns)
    path.write_bytes(b"\xef\xbb\xbf" + ",".join(columns).encode() + b"\n" + b"\xff" * 10 + b"\n")  # a bad row, not a bad file
    assert ingest.inspect(found(path), project.train_table, "transactions").format == "csv"


def test_json_fields_come_from_the_first_line_that_is_an_object_with_fields(tmp_path):
    path = tmp_path / "day.jsonl"
    path.write_bytes(b"\n".join([b"[" * 50_000, b"\xff{", b"", b"[1]", b"{}", b'{"amount": 1e999999}', b'{"country": 1}']))
    assert ingest._columns_of(found(path), "jsonl") == ["amount"]
    path.write_bytes(b"[1]\n" * ingest.INSPECT_LINES + b'{"amount": 1}\n')
    assert ingest._columns_of(found(path), "jsonl") is None  # nothing to check: each line meets its own checks


def test_csv_with_good_bytes_never_takes_the_value_by_value_path(project, tmp_path, monkeypatch):
    path = tmp_path / "day.csv"
    columns = list(project.train_table.columns)
    path.write_text(",".join(columns) + "\n" + ",".join(["é"] * len(columns)) + "\n")
    monkeypatch.setattr(ingest, "_decode_each", lambda *_: pytest.fail("decoded value by value"))
    [rows] = list(landing.read_csv(pa.table({"location": [str(path)]}), pafs.LocalFileSystem(), columns))
    checked = ingest.check_batch(rows, project.train_table)
    assert checked.column("__text__customer_id").to_pylist() == ["é"]  # a bad row (é is no timestamp), kept as text
