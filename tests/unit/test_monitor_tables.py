"""The monitor's tables on a real local Delta lake (no Ray): exactly-once windows over the log, incidents as folded
events, a window's report written once, labels joined to the rows they label."""

from datetime import datetime, timezone

import pyarrow as pa
import pytest

from mlray.control.clock import SYSTEM_CLOCK
from mlray.control.state import MonitorCheckpoint, WindowReport
from mlray.errors import UserError
from mlray.incidents import Incidents
from mlray.lake import Lake
from mlray.lake.inference import LABELS_SCHEMA, inference_log_schema
from mlray.monitor.labels import LabelJoin
from mlray.monitor.live import LiveQuality
from mlray.monitor.windows import Cursor, cursor_after, read_from
from mlray.spec import parse_spec, starter_spec
from mlray.window_reports import read_reports, write_report

AT = datetime(2026, 11, 26, tzinfo=timezone.utc)


@pytest.fixture
def log(tmp_path):
    """An inference log with three commits of 5 served rows each, plus a shadow copy of each row."""
    spec = parse_spec(starter_spec())
    schema = inference_log_schema(spec.train_table, ["amount"])
    lake = Lake(str(tmp_path / "lake"))
    lake.create("inference_log", schema)
    for commit in range(3):
        rows = [{"request_id": f"r{commit}-{i}", "row": 0, "at": AT, "model_version": "1", "shadow": shadow,
                 "inputs": {"amount": float(commit * 10 + i)}, "score": 0.1}
                for i in range(5) for shadow in (False, True)]
        lake.append("inference_log", pa.Table.from_pylist(rows, schema=schema))
    return lake


def amounts(rows: pa.Table) -> list[float]:
    return [r["amount"] for r in rows.column("inputs").to_pylist()]


def test_windows_cut_anywhere_chain_into_every_served_row_exactly_once(log):
    start = Cursor(1, 0)
    everything = read_from(log, "inference_log", start)
    assert everything.num_rows == 15 and not any(everything.column("shadow").to_pylist())
    seen, cursor = [], start
    for size in (7, 4, 4):  # cuts inside commits: 7 ends in the middle of commit 2, 11 in commit 3
        rows = read_from(log, "inference_log", cursor)
        seen += amounts(rows.slice(0, size))
        cursor = cursor_after(rows, size, cursor)
    assert sorted(seen) == sorted(amounts(everything)) and len(set(seen)) == 15
    assert cursor == Cursor(3, 5) and read_from(log, "inference_log", cursor).num_rows == 0


def test_incidents_fold_their_events_and_an_event_lands_once(tmp_path):
    incidents = Incidents(Lake(str(tmp_path / "lake")))
    assert incidents.record("a-w3", "open", "monitor", cause="drift", evidence={"columns": ["amount"]}, windows=[2, 3])
    assert not incidents.record("a-w3", "open", "monitor", cause="drift")  # a retried write
    incidents.record("a-w3", "submitted", "monitor", job_id="mlray-x-retrain-a-w3")
    incidents.record("b-w9", "open", "monitor", cause="quality")
    incident = incidents.get("a-w3")
    assert incident.status == "submitted" and incident.job_id == "mlray-x-retrain-a-w3"
    assert incident.evidence == {"columns": ["amount"]} and incident.windows == [2, 3]
    assert [e.status for e in incident.events] == ["open", "submitted"]
    incidents.record("a-w3", "promoted", "job:a-w3", challenger="2")
    assert [i.incident_id for i in incidents.open()] == ["b-w9"]
    with pytest.raises(UserError, match="no incident 'zzz'"):
        incidents.get("zzz")


def test_a_window_report_is_written_once(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    report = WindowReport(seq=0, epoch="e1", at=AT, rows=10, champion="1", start=[1, 0], end=[1, 10],
                          columns=["amount"], p_values=[0.5], distances=[0.1], threshold=0.01, drifted=[],
                          score_drift=False, quality={"1": {"roc_auc": 0.8}}, verdict="ok")
    assert write_report(lake, report) and not write_report(lake, report)
    found = read_reports(lake, "e1", 0)
    assert len(found) == 1 and found[0].quality == {"1": {"roc_auc": 0.8}} and found[0].end == [1, 10]


def test_a_label_joins_its_row_with_the_class_probabilities_it_was_served_with(tmp_path):
    spec = parse_spec(starter_spec())
    schema = inference_log_schema(spec.train_table, ["amount"])
    lake = Lake(str(tmp_path / "lake"))
    lake.create("inference_log", schema)
    served = [{"request_id": "m", "row": 0, "at": AT, "model_version": "3", "shadow": False, "prediction": '"b"',
               "score": 0.7, "probabilities": [0.2, 0.7, 0.1]},
              {"request_id": "m", "row": 1, "at": AT, "model_version": "3", "shadow": False, "prediction": '"a"',
               "score": 0.6}]  # logged by an older mlray: no probabilities
    lake.append("inference_log", pa.Table.from_pylist(served, schema=schema))
    lake.create("labels", LABELS_SCHEMA)
    lake.append("labels", pa.Table.from_pylist([{"request_id": "m", "row": r, "label": label, "at": AT}
                                                for r, label in ((0, "c"), (1, "a"))], schema=LABELS_SCHEMA))
    live, checkpoint, join = LiveQuality(10), MonitorCheckpoint(epoch="e"), LabelJoin(lake, spec.serve, SYSTEM_CLOCK)
    assert join.take(checkpoint, live) == 4
    assert sorted(live.labelled_probabilities("3"), key=str) == [("a", None), ("c", [0.2, 0.7, 0.1])]
    # a label whose row is not logged yet matches nothing: it waits (up to an hour)
    now = datetime.now(timezone.utc)
    lake.append("labels", pa.Table.from_pylist([{"request_id": "later", "row": 0, "label": "b", "at": now}],
                                               schema=LABELS_SCHEMA))
    join.take(checkpoint, live)
    assert [label[:3] for label in checkpoint.pending_labels] == [["later", 0, "b"]] and live.counts() == {"3": 2}
