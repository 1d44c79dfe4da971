"""Upkeep of an append-heavy table on a local Delta table, with a writer appending all along (no Ray)."""

import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from mlray.lake import Lake
from mlray.lake.inference import appended_since
from mlray.lake.upkeep import compact_and_expire

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("at", pa.timestamp("us", tz="UTC"),
                                                                          nullable=False)])
NOW = datetime.now(timezone.utc)
OLD, YOUNG = NOW - timedelta(days=10), NOW - timedelta(minutes=5)


def batch(ids, at) -> pa.Table:
    return pa.table({"id": list(ids), "at": [at] * len(ids)}, schema=SCHEMA)


@pytest.fixture
def lake(tmp_path):
    """A table of 20 small files: ids 0-49 ten days old, 50-99 five minutes old."""
    lake = Lake(str(tmp_path / "lake"))
    lake.create("log", SCHEMA)
    for start in range(0, 100, 5):
        lake.append("log", batch(range(start, start + 5), OLD if start < 50 else YOUNG))
    return lake


class Writer(threading.Thread):
    """Appends small batches of new ids until stopped; keeps every failure."""

    def __init__(self, lake: Lake):
        super().__init__(daemon=True)
        self.lake, self.ids, self.errors = lake, [], []
        self.stop, self.started_writing = threading.Event(), threading.Event()

    def run(self):
        next_id = 1000
        while not self.stop.is_set():
            ids = range(next_id, next_id + 3)
            try:
                self.lake.append("log", batch(ids, datetime.now(timezone.utc)))
                self.ids.extend(ids)
            except Exception as exc:  # noqa: BLE001 - the test asserts there are none
                self.errors.append(exc)
            next_id += 3
            if len(self.ids) >= 9:
                self.started_writing.set()


def test_upkeep_compacts_expires_and_vacuums_while_a_writer_keeps_appending(lake):
    uri = lake.uri("log")
    files_before, version_before = len(DeltaTable(uri).file_uris()), lake.latest_version("log")
    writer = Writer(lake)
    writer.start()
    assert writer.started_writing.wait(60)
    counts = compact_and_expire(lake, "log", timedelta(days=1))
    written = len(writer.ids)
    deadline = datetime.now() + timedelta(seconds=30)
    while len(writer.ids) < written + 9 and datetime.now() < deadline:  # a few appends after the upkeep too
        writer.stop.wait(0.05)
    writer.stop.set()
    writer.join(60)

    assert writer.errors == [] and len(writer.ids) >= written + 9
    assert counts["files_removed"] >= 20 and counts["files_added"] >= 1 and counts["rows_deleted"] == 50
    assert counts["files_vacuumed"] == 0  # what the compaction removed is younger than the retention
    table = DeltaTable(uri).to_pyarrow_table()  # any Delta reader still reads it
    ids = Counter(table.column("id").to_pylist())
    assert all(n == 1 for n in ids.values())  # no row twice
    assert set(ids) == set(range(50, 100)) | set(writer.ids)  # every young and appended row, no old one
    assert len(DeltaTable(uri).file_uris()) < files_before + len(writer.ids) // 3

    appended = appended_since(lake, "log", version_before, ["id"])
    assert Counter(appended.column("id").to_pylist()) == Counter(writer.ids)  # rewrites and deletes are not appends


def test_a_compaction_alone_adds_nothing_to_what_was_appended(lake):
    version = lake.latest_version("log")
    counts = compact_and_expire(lake, "log", timedelta(days=30))
    assert counts == {"files_removed": 20, "files_added": 1, "rows_deleted": 0, "files_vacuumed": 0}
    assert lake.latest_version("log") == version + 1
    assert appended_since(lake, "log", version).num_rows == 0
    lake.append("log", batch([500], NOW))
    assert appended_since(lake, "log", version, ["id"]).column("id").to_pylist() == [500]
    assert len(DeltaTable(lake.uri("log")).file_uris()) == 2


def test_a_reader_behind_what_upkeep_vacuumed_is_told_so_in_one_line(lake):
    from mlray.errors import UserError

    compact_and_expire(lake, "log", timedelta(days=1))
    compacted = lake.latest_version("log")
    lake.append("log", batch([500], NOW))
    gone = DeltaTable(lake.uri("log")).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    assert len(gone) >= 20  # as a later upkeep would, once the retention has passed
    with pytest.raises(UserError, match="no longer all stored") as error:
        appended_since(lake, "log", -1)
    assert "\n" not in str(error.value)
    assert appended_since(lake, "log", compacted, ["id"]).column("id").to_pylist() == [500]


def test_an_append_that_loses_a_race_with_the_retention_delete_is_written_again(lake, monkeypatch):
    """delta-rs fails an append whose snapshot lost files to a concurrent delete; `Lake.append` writes it again."""
    opened = Lake.open

    def open_then_delete(self, name, *args, **kwargs):
        table = opened(self, name, *args, **kwargs)
        monkeypatch.setattr(Lake, "open", opened)
        DeltaTable(self.uri(name)).delete("id < 5")  # commits after this append read its snapshot
        return table

    monkeypatch.setattr(Lake, "open", open_then_delete)
    result = lake.append("log", batch([700, 701], NOW))
    assert result.committed and result.rows == 2
    ids = lake.read("log").column("id").to_pylist()
    assert sorted(ids) == [*range(5, 100), 700, 701]


def test_a_retention_must_be_positive(lake):
    from mlray.errors import UserError

    with pytest.raises(UserError, match="retention"):
        compact_and_expire(lake, "log", timedelta(0))
