"""The inference log and the labels as tables: schemas, readers, and the ingress's buffers against a local Delta table."""

import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from mlray.errors import UserError
from mlray.lake import Lake
from mlray.lake.inference import LABELS_SCHEMA, appended_since, dedupe_labels, flat_inputs, inference_log_schema
from mlray.serve.logbook import InferenceLog, LabelLog, create_tables, log_schema
from mlray.spec import parse_spec

T0 = datetime(2026, 11, 1, 10, tzinfo=timezone.utc)


@pytest.fixture
def spec(starter_text):
    return parse_spec(starter_text)


@pytest.fixture
def lake(tmp_path):
    return Lake(str(tmp_path / "lake"))


def labels(*entries) -> pa.Table:
    """(request id, row, label, seconds after T0) → a labels table, in that order of arrival."""
    return pa.Table.from_pylist([{"request_id": r, "row": i, "label": label, "at": T0 + timedelta(seconds=s)}
                                 for r, i, label, s in entries], schema=LABELS_SCHEMA)


def request(spec, *amounts) -> list[dict]:
    """Request rows as the ingress validated them: an amount each, the other inputs fixed, no id and no label."""
    return [{"event_time": T0, "amount": amount, "country": "DE", "device": "pos", "customer_age": 40}
            for amount in amounts]


# ------------------------------------------------------------------ schemas and readers

def test_dedupe_labels_keeps_the_first_label_of_each_request_row():
    kept = dedupe_labels(labels(("a", 0, "true", 5), ("a", 0, "false", 1), ("a", 1, "true", 2),
                                ("b", 0, "false", 3), ("b", 0, "true", 3), ("a", 1, "false", 9)))
    got = {(r["request_id"], r["row"]): r["label"] for r in kept.to_pylist()}
    assert kept.num_rows == 3 and kept.schema == LABELS_SCHEMA
    assert got == {("a", 0): "false", ("a", 1): "true", ("b", 0): "false"}  # earliest `at`; a tie: the first to arrive
    assert dedupe_labels(labels()).num_rows == 0


def test_the_log_schema_holds_the_request_columns_typed_as_the_lake_in_one_nullable_struct(spec):
    schema = inference_log_schema(spec.train_table, ["amount", "country", "card_present", "customer_age", "event_time"])
    inputs = schema.field("inputs")
    assert inputs.nullable and [f.name for f in inputs.type] == ["amount", "country", "card_present", "customer_age",
                                                                  "event_time"]
    assert [f.type for f in inputs.type] == [pa.float64(), pa.string(), pa.bool_(), pa.int64(),
                                             pa.timestamp("us", tz="UTC")]
    assert all(f.nullable for f in inputs.type)  # a request may leave out an optional column
    assert "amount" not in schema.names and schema.field("request_id").nullable is False
    assert log_schema(spec).field("inputs").type.names == list(spec.train_table.columns)


def test_flat_inputs_turns_the_struct_into_plain_columns(spec, lake):
    book = InferenceLog(lake, "inference_log", log_schema(spec))
    book.record("r1", "1", request(spec, 3.5, 7.0), [{"score": 0.1}, {"score": 0.2}], 2.0)
    flat = flat_inputs(book.rows_of(book.pending))
    assert flat.column_names == list(spec.train_table.columns)
    assert flat.column("amount").to_pylist() == [3.5, 7.0] and flat.schema.field("amount").type == pa.float64()
    assert flat.column("transaction_id").to_pylist() == [None, None]


# ------------------------------------------------------------------ the inference log buffer

def test_the_inference_log_flushes_every_call_in_one_commit_with_typed_inputs(spec, lake):
    create_tables(spec, lake)
    before = lake.latest_version("inference_log")
    book = InferenceLog(lake, "inference_log", log_schema(spec))
    assert book.flush() == 0 and lake.latest_version("inference_log") == before  # nothing buffered: no commit
    answers = [{"prediction": True, "score": 0.9, "feature_version": "f1"}, {"prediction": False, "score": 0.2,
                                                                              "feature_version": "f1"}]
    book.record("r1", "1", request(spec, 12.5, 99.0), answers, 4.0, sticky_key="user-1")
    book.record("r1", "2", request(spec, 12.5, 99.0), answers, 6.0, shadow=True)
    book.record("r2", "1", request(spec, 1.0), None, 1.0, error="RuntimeError")
    assert book.flush() == 5 and not book.pending and not book.unsent
    assert lake.latest_version("inference_log") == before + 1

    logged = lake.read("inference_log")
    assert logged.schema == log_schema(spec)
    rows = sorted(logged.to_pylist(), key=lambda r: (r["request_id"], r["model_version"], r["row"]))
    assert [(r["request_id"], r["model_version"], r["row"], r["shadow"]) for r in rows] == [
        ("r1", "1", 0, False), ("r1", "1", 1, False), ("r1", "2", 0, True), ("r1", "2", 1, True), ("r2", "1", 0, False)]
    assert [r["inputs"]["amount"] for r in rows] == [12.5, 99.0, 12.5, 99.0, 1.0]
    assert rows[0]["inputs"]["event_time"] == T0 and rows[0]["inputs"]["customer_age"] == 40
    assert json.loads(rows[0]["prediction"]) is True and rows[0]["score"] == 0.9 and rows[0]["feature_version"] == "f1"
    assert rows[0]["sticky_key"] == "user-1" and rows[2]["latency_ms"] == 6.0
    assert rows[4]["error"] == "RuntimeError" and rows[4]["prediction"] is None and rows[4]["score"] is None
    appended = appended_since(lake, "inference_log", before, ["request_id", "inputs"])  # what the monitor reads
    assert sorted(flat_inputs(appended).column("amount").to_pylist()) == [1.0, 12.5, 12.5, 99.0, 99.0]


def test_a_failed_flush_keeps_its_rows_for_the_next_one(spec, lake, monkeypatch):
    create_tables(spec, lake)
    book = InferenceLog(lake, "inference_log", log_schema(spec))
    book.record("r1", "1", request(spec, 1.0), [{"score": 0.5}], 1.0)

    def away(*args, **kwargs):
        raise OSError("the lake is away")

    monkeypatch.setattr(book.appender, "append", away)
    assert book.flush() == 0 and len(book.unsent) == 1 and book.stats().pending == 1
    book.record("r2", "1", request(spec, 2.0), [{"score": 0.6}], 1.0)
    monkeypatch.undo()
    assert book.flush() == 2 and book.stats().pending == 0
    assert sorted(lake.read("inference_log").column("request_id").to_pylist()) == ["r1", "r2"]


def test_a_flush_whose_commit_landed_but_failed_to_say_so_is_not_written_twice(spec, lake, monkeypatch):
    create_tables(spec, lake)
    book = InferenceLog(lake, "inference_log", log_schema(spec), writer="replica-a")
    book.record("r1", "1", request(spec, 1.0, 2.0), [{"score": 0.5}, {"score": 0.6}], 1.0)
    real = book.appender.append

    def landed_then_failed(data, sequence):
        real(data, sequence)
        raise OSError("connection reset after the commit")

    monkeypatch.setattr(book.appender, "append", landed_then_failed)
    assert book.flush() == 0 and len(book.unsent) == 1  # it looks failed: kept for a retry
    monkeypatch.undo()
    book.record("r2", "1", request(spec, 3.0), [{"score": 0.7}], 1.0)
    assert book.flush() == 1  # the retried batch is skipped by its transaction; only r2 is new
    logged = lake.read("inference_log").column("request_id").to_pylist()
    assert sorted(logged) == ["r1", "r1", "r2"]
    assert lake.open("inference_log").transaction_version("replica-a") == 2  # one entry per writer, not per flush


def test_a_row_the_log_cannot_type_goes_to_the_rejects_and_the_rest_of_the_flush_lands(spec, lake):
    create_tables(spec, lake)
    book = InferenceLog(lake, "inference_log", log_schema(spec))
    too_big = request(spec, 5.0)[0] | {"customer_age": 2**64}  # passed no validation: the log must still hold
    for n in range(10):
        book.record(f"ok{n}", "1", request(spec, float(n)), [{"score": 0.1}], 1.0)
    book.record("bad", "1", [request(spec, 4.0)[0], too_big], [{"score": 0.2}, {"score": 0.3}], 1.0)
    assert book.flush() == 11  # ten good calls and the good row of the bad one
    logged = lake.read("inference_log")
    assert sorted(zip(logged.column("request_id").to_pylist(), logged.column("row").to_pylist()))[:1] == [("bad", 0)]
    rejects = lake.read("inference_log_rejects").to_pylist()
    assert [(r["request_id"], r["row"]) for r in rejects] == [("bad", 1)]
    assert "ArrowInvalid" in rejects[0]["reason"] or "Overflow" in rejects[0]["reason"]
    assert json.loads(rejects[0]["raw"])["inputs"][0]["customer_age"] == 2**64
    assert book.stats().rejected == 1


def test_the_buffer_is_bounded_and_drops_the_oldest_rows_counting_them(spec, lake, monkeypatch):
    create_tables(spec, lake)
    book = InferenceLog(lake, "inference_log", log_schema(spec), max_rows=5)

    def away(*args, **kwargs):
        raise OSError("the lake is away")

    monkeypatch.setattr(book.appender, "append", away)
    for n in range(4):
        book.record(f"r{n}", "1", request(spec, 1.0, 2.0), [{"score": 0.5}] * 2, 1.0)  # 8 rows
        book.flush()
    stats = book.stats()
    assert stats.pending == 5 and stats.dropped == 3
    monkeypatch.undo()
    assert book.flush() == 5
    kept = sorted(zip(*lake.read("inference_log").select(["request_id", "row"]).to_pydict().values()))
    assert kept == [("r1", 1), ("r2", 0), ("r2", 1), ("r3", 0), ("r3", 1)]  # the oldest three went


def test_a_log_left_with_another_schema_stops_the_deploy_in_one_line(spec, lake):
    old = inference_log_schema(spec.train_table, []).set(7, pa.field("inputs", pa.string()))  # inputs as JSON text
    lake.create("inference_log", old)
    with pytest.raises(UserError) as error:
        create_tables(spec, lake)
    assert "'inference_log'" in str(error.value) and "inputs is string" in str(error.value)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------ the labels buffer

def test_labels_are_buffered_deduplicated_and_flushed_in_one_commit(spec, lake):
    create_tables(spec, lake)
    before = lake.latest_version("labels")
    book = LabelLog(lake, "labels")
    assert book.add("r1", 0, True) and book.add("r1", 1, False) and book.add("r2", 0, True)
    assert not book.add("r1", 0, False)  # buffered already
    assert book.flush() == 3 and lake.latest_version("labels") == before + 1
    assert not book.add("r1", 0, True)  # flushed recently
    assert book.add("r3", 0, 1.5) and book.flush() == 1
    stored = {(r["request_id"], r["row"]): r["label"] for r in lake.read("labels").to_pylist()}
    assert stored == {("r1", 0): "True", ("r1", 1): "False", ("r2", 0): "True", ("r3", 0): "1.5"}
    assert book.flush() == 0 and lake.latest_version("labels") == before + 2


def test_a_label_the_table_cannot_hold_is_rejected_and_the_other_labels_land(spec, lake):
    create_tables(spec, lake)
    book = LabelLog(lake, "labels")
    for n in range(5):
        assert book.add(f"r{n}", 0, "1")
    assert book.add("evil", 2**31, "1")  # past int32: no validation stopped it here
    assert book.flush() == 5
    assert sorted(lake.read("labels").column("request_id").to_pylist()) == [f"r{n}" for n in range(5)]
    rejects = lake.read("labels_rejects").to_pylist()
    assert [(r["request_id"], r["row"]) for r in rejects] == [("evil", 2**31)] and "ArrowInvalid" in rejects[0]["reason"]


def test_an_older_inference_log_gains_the_new_columns_in_place(spec, lake):
    old = pa.schema([f for f in log_schema(spec) if f.name not in ("key_fingerprint", "pinned", "probabilities")])
    lake.create("inference_log", old)
    lake.append("inference_log", old.empty_table())
    create_tables(spec, lake)
    assert lake.open("inference_log").schema().to_arrow().names == log_schema(spec).names
    book = InferenceLog(lake, "inference_log", log_schema(spec))
    book.record("r1", "1", request(spec, 1.0), [{"score": 0.5}], 1.0, key_fingerprint="sha256:abcd…", pinned=True)
    book.record("r2", "1", request(spec, 1.0), [{"prediction": "b", "probability_a": 0.25, "probability_b": 0.75}], 1.0)
    assert book.flush() == 2
    rows = sorted(lake.read("inference_log").to_pylist(), key=lambda r: r["request_id"])
    assert rows[0]["key_fingerprint"] == "sha256:abcd…" and rows[0]["pinned"] is True
    assert (rows[0]["probabilities"], rows[1]["probabilities"]) == (None, [0.25, 0.75])  # multiclass: every class's


def test_a_replica_remembers_a_bounded_number_of_labels_and_the_readers_keep_the_first(spec, lake):
    create_tables(spec, lake)
    book = LabelLog(lake, "labels", remember=2)
    assert book.add("r1", 0, "a") and book.add("r2", 0, "b") and book.add("r3", 0, "c")
    assert book.add("r1", 0, "late")  # forgotten while still buffered: the flush keeps the first
    assert book.flush() == 3
    assert book.add("r2", 0, "later") and book.flush() == 1  # forgotten after its flush: a second row lands
    stored = lake.read("labels")
    assert stored.num_rows == 4
    first = {(r["request_id"], r["row"]): r["label"] for r in dedupe_labels(stored).to_pylist()}
    assert first == {("r1", 0): "a", ("r2", 0): "b", ("r3", 0): "c"}


def test_appended_since_reads_only_the_rows_of_later_commits(spec, lake):
    assert appended_since(lake, "labels", -1) is None
    create_tables(spec, lake)
    book = LabelLog(lake, "labels")
    book.add("r1", 0, True)
    book.flush()
    seen = lake.latest_version("labels")
    book.add("r2", 0, False)
    book.add("r2", 1, True)
    book.flush()
    later = appended_since(lake, "labels", seen, ["request_id", "row"])
    assert later.column_names == ["request_id", "row", "_commit_version"]
    assert sorted(later.column("request_id").to_pylist()) == ["r2", "r2"]
    assert set(later.column("_commit_version").to_pylist()) == {seen + 1}
    everything = appended_since(lake, "labels", -1)
    assert sorted(everything.column("request_id").to_pylist()) == ["r1", "r2", "r2"]
    assert appended_since(lake, "labels", seen + 1).num_rows == 0
