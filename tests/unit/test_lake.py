"""Delta tables through `Lake`, without Ray."""

from datetime import datetime, timezone

import pyarrow as pa
import pytest

from mlray.errors import UserError
from mlray.lake import Lake

SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("x", pa.float64())])


def rows(*ids):
    return pa.table({"id": list(ids), "x": [float(i) for i in range(len(ids))]}, schema=SCHEMA)


@pytest.fixture
def lake(tmp_path):
    return Lake(str(tmp_path / "lake"))


def test_the_same_batch_id_commits_once(lake):
    first = lake.append("t", rows("a", "b"), batch_id="batch-1", schema=SCHEMA)
    again = lake.append("t", rows("a", "b"), batch_id="batch-1", schema=SCHEMA)
    assert first.committed and not again.committed
    assert again.version == first.version
    assert lake.read("t").num_rows == 2
    assert lake.committed("t", "batch-1") and not lake.committed("t", "batch-2")


def test_time_travel_by_version_and_timestamp(lake):
    lake.append("t", rows("a"), batch_id="1", schema=SCHEMA)
    between = datetime.now(timezone.utc)
    lake.append("t", rows("b", "c"), batch_id="2", schema=SCHEMA)
    assert lake.read("t", version=1).column("id").to_pylist() == ["a"]
    assert lake.read("t", as_of=between).num_rows == 1
    assert lake.read("t").num_rows == 3
    with pytest.raises(UserError, match="has no version 9"):
        lake.open("t", version=9)


def test_changes_since_a_version(lake):
    lake.append("t", rows("a"), batch_id="1", schema=SCHEMA)
    lake.append("t", rows("b", "c"), batch_id="2", schema=SCHEMA)
    changes = lake.changes_since("t", 1)
    assert sorted(changes.column("id").to_pylist()) == ["b", "c"]
    assert set(changes.column("_change_type").to_pylist()) == {"insert"}
    assert set(changes.column("_commit_version").to_pylist()) == {2}
    assert lake.changes_since("t", 2).num_rows == 0


def test_history_keeps_batch_ids_and_sources(lake):
    lake.append("t", rows("a"), batch_id="b-1", schema=SCHEMA, metadata={"mlray.source": "/in/a.csv"})
    newest = lake.history("t")[0]
    assert newest["version"] == 1 and newest["rows_added"] == 1
    assert newest["batch_id"] == "b-1" and newest["source"] == "/in/a.csv"


def test_schema_is_enforced(lake):
    lake.append("t", rows("a"), schema=SCHEMA)
    with pytest.raises(UserError, match="missing columns x; unexpected columns y"):
        lake.append("t", pa.table({"id": ["b"], "y": [1.0]}))
    with pytest.raises(UserError, match="does not fit the table's schema"):
        lake.append("t", pa.table({"id": ["b"], "x": ["not a number"]}))
    other = pa.schema([pa.field("id", pa.int64())])
    with pytest.raises(UserError, match="exists with another schema"):
        lake.create("t", other)
    assert lake.read("t").num_rows == 1


def test_a_crash_before_commit_leaves_the_table_unchanged(lake):
    lake.append("t", rows("a"), schema=SCHEMA)
    version = lake.latest_version("t")

    def crashing():
        yield rows("b").to_batches()[0]
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError, match="worker died"):
        lake.append("t", crashing(), batch_id="crashy")
    assert lake.latest_version("t") == version
    assert lake.read("t").num_rows == 1
    assert not lake.committed("t", "crashy")


def test_another_delta_reader_sees_the_same_table(lake):
    polars = pytest.importorskip("polars")
    from deltalake import DeltaTable

    lake.append("t", rows("a", "b"), schema=SCHEMA)
    direct = DeltaTable(lake.uri("t")).to_pyarrow_table()
    assert direct.schema.field("id").type == pa.string() and not direct.schema.field("id").nullable
    frame = polars.read_delta(lake.uri("t"))
    assert frame.columns == ["id", "x"] and frame.height == 2
    assert frame.schema["x"] == polars.Float64


def test_list_and_missing_tables(lake):
    lake.append("t", rows("a"), schema=SCHEMA)
    [info] = lake.list()
    assert (info.name, info.version, info.rows, info.columns) == ("t", 1, 1, 2)
    with pytest.raises(UserError, match="does not exist"):
        lake.read("nope")
    with pytest.raises(UserError, match="not valid"):
        lake.uri("../escape")


def _append_from_another_process(root: str, batch_id: str, barrier_path: str) -> bool:
    import time
    from pathlib import Path

    lake = Lake(root)
    while not Path(barrier_path).exists():
        time.sleep(0.01)  # fault timing: the start gun, so the two writers race for the same commit
    return lake.append("t", rows("x"), batch_id=batch_id, schema=SCHEMA).committed


def test_concurrent_appends_of_one_batch_commit_it_once(lake, tmp_path):
    import multiprocessing

    lake.create("t", SCHEMA)
    barrier = tmp_path / "go"
    with multiprocessing.get_context("spawn").Pool(2) as pool:  # deltalake's runtime does not survive fork
        pending = pool.starmap_async(_append_from_another_process, [(lake.root, "same", str(barrier))] * 2)
        barrier.touch()
        committed = pending.get(timeout=120)
    assert sorted(committed) == [False, True]
    assert lake.read("t").num_rows == 1


def test_an_s3_lake_whose_commits_nothing_makes_atomic_is_refused_saying_what_to_set():
    from mlray.lake.tables import check_atomic_commits

    with pytest.raises(UserError, match="AWS_S3_LOCKING_PROVIDER: dynamodb .* conditional_put: etag"):
        check_atomic_commits("s3://bucket/lake", {"AWS_REGION": "us-east-1"}, environ={})
    check_atomic_commits("s3://bucket/lake", {"aws_s3_locking_provider": "dynamodb"}, environ={})
    check_atomic_commits("s3://bucket/lake", {"conditional_put": "etag"}, environ={})
    check_atomic_commits("s3://bucket/lake", {}, environ={"AWS_S3_LOCKING_PROVIDER": "dynamodb"})
    check_atomic_commits("s3://bucket/lake", {"AWS_S3_ALLOW_UNSAFE_RENAME": "true"}, environ={})  # the opt-out
    check_atomic_commits("gs://bucket/lake", {}, environ={})  # GCS and local disks commit atomically
