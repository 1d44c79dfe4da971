"""The window report and the incident as typed state, on a real local Delta lake (no Ray): a report round-trips
unchanged, rows written before (plain dicts) still read, incidents fold into `Incident`s, and a row this mlray cannot
read is refused in one line naming its table."""

import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from mlray import window_reports as reports
from mlray.control.state import (
    Incident,
    IncidentEvent,
    IncidentStatus,
    WindowReport,
    WindowVerdict,
)
from mlray.errors import UserError
from mlray.incidents import SCHEMA as INCIDENTS_SCHEMA
from mlray.incidents import TABLE as INCIDENTS
from mlray.incidents import Incidents
from mlray.lake import Lake
from mlray.window_reports import read_reports, write_report

AT = datetime(2026, 11, 26, 12, 30, tzinfo=timezone.utc)


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(root=str(tmp_path / "lake"))


def full_report(seq: int = 0, verdict: str = "drift") -> WindowReport:
    return WindowReport(seq=seq, epoch="e1", at=AT, first_row_at=AT - timedelta(minutes=5),
                        last_row_at=AT - timedelta(seconds=1), rows=500, champion="3", start=[4, 120], end=[6, 20],
                        columns=["amount", "device"], p_values=[0.001, 0.4], distances=[0.31, 0.02], threshold=0.025,
                        drifted=["amount"], score_p_value=0.003, score_distance=0.2, score_drift=True,
                        mmd_p_value=0.01, mmd_drift=True, quality={"3": {"roc_auc": 0.91, "roc_auc_se": 0.02}},
                        quality_drop=0.04, verdict=verdict, seconds=0.25)


def write_rows(lake: Lake, table: str, schema: pa.Schema, rows: list[dict]) -> None:
    """Rows as an older mlray wrote them: plain dicts through pyarrow and deltalake, no model."""
    write_deltalake(lake.uri(table), pa.Table.from_pylist(rows, schema=schema), mode="append")


def test_a_report_round_trips_through_its_table_unchanged(lake):
    report = full_report()
    assert write_report(lake, report)
    [found] = read_reports(lake)
    assert found == report and isinstance(found.verdict, WindowVerdict)
    [row] = lake.read(reports.TABLE).to_pylist()
    assert row == report.model_dump() | {name: None if getattr(report, name) is None else json.dumps(getattr(report, name))
                                         for name in reports.JSON_COLUMNS}


def test_a_table_an_older_mlray_wrote_gains_the_new_columns_and_both_rows_read(lake):
    older = pa.schema(list(reports.SCHEMA)[: reports.SCHEMA.get_field_index("seconds") + 1])  # before the columns added
    old_row = full_report(seq=0).model_dump() | {"quality": "{}"}
    write_rows(lake, reports.TABLE, older, [{k: v for k, v in old_row.items() if k in older.names}])
    matched = {"column": "event_time", "period": "hour_of_day", "reference_rows": 812, "unseen": [], "unseen_share": 0.0,
               "thin_share": 0.01}
    assert write_report(lake, full_report(seq=1).model_copy(update={"context": matched}))
    found = {r.seq: r for r in read_reports(lake)}
    assert found[0].context is None and found[1].context == matched


def test_a_report_written_as_a_dict_by_an_older_mlray_reads(lake):
    old = {"seq": 2, "epoch": "e0", "at": AT, "rows": 10, "champion": "1", "start": [1, 0], "end": [1, 10],
           "columns": ["amount"], "p_values": [0.5], "distances": [0.1], "threshold": 0.01, "drifted": [],
           "score_drift": False, "quality": json.dumps({"1": {"roc_auc": 0.8}}), "verdict": "ok"}
    write_rows(lake, reports.TABLE, reports.SCHEMA, [old])
    [found] = read_reports(lake, "e0", 2)
    assert found.verdict == WindowVerdict.OK and found.quality == {"1": {"roc_auc": 0.8}} and found.end == [1, 10]
    assert found.first_row_at is None and found.mmd_drift is False and found.score_p_value is None


def test_a_report_with_a_verdict_this_mlray_does_not_know_is_refused_naming_its_table(lake):
    row = full_report().model_dump() | {name: "{}" for name in reports.JSON_COLUMNS} | {"verdict": "maybe"}
    write_rows(lake, reports.TABLE, reports.SCHEMA, [row])
    with pytest.raises(UserError, match=r"^drift_reports row e1:0 is not one this mlray reads: verdict: ") as caught:
        read_reports(lake)
    assert "\n" not in str(caught.value)


def test_incidents_fold_into_typed_incidents_with_their_events_in_order(lake):
    incidents = Incidents(lake)
    incidents.record("e1-w4", IncidentStatus.OPEN, "monitor", cause="drift", detail="2 of 3 windows drifted",
                     evidence={"windows": [3, 4]}, windows=[3, 4])
    incidents.record("e1-w4", IncidentStatus.SUBMITTED, "monitor", job_id="mlray-x-retrain-e1-w4", detail="Ray job")
    incidents.record("e1-w4", IncidentStatus.RETRAINED, "job:e1-w4", challenger="4")
    incident = incidents.get("e1-w4")
    assert isinstance(incident, Incident) and all(isinstance(e, IncidentEvent) for e in incident.events)
    assert [e.status for e in incident.events] == [IncidentStatus.OPEN, IncidentStatus.SUBMITTED,
                                                   IncidentStatus.RETRAINED]
    assert [e.actor for e in incident.events] == ["monitor", "monitor", "job:e1-w4"]
    assert incident.status == IncidentStatus.RETRAINED and not incident.closed
    assert incident.opened == incident.events[0].at and incident.updated == incident.events[-1].at
    assert incident.detail == "Ray job" and incident.events[-1].detail is None  # each field as last recorded
    assert (incident.cause, incident.job_id, incident.challenger) == ("drift", "mlray-x-retrain-e1-w4", "4")
    assert incident.evidence == {"windows": [3, 4]} and incident.windows == [3, 4]


def test_an_incident_an_older_mlray_left_unfinished_reads_closed(lake):
    rows = [{"incident_id": "e0-w1", "at": AT, "status": "open", "actor": "monitor", "cause": "drift"},
            {"incident_id": "e0-w1", "at": AT + timedelta(hours=1), "status": "unfinished", "actor": "job:e0-w1"}]
    write_rows(lake, INCIDENTS, INCIDENTS_SCHEMA, rows)
    [incident] = Incidents(lake).all()
    assert incident.status == IncidentStatus.UNFINISHED and incident.closed and Incidents(lake).open() == []


def test_an_incident_with_a_status_this_mlray_does_not_know_is_refused_naming_its_table(lake):
    incidents = Incidents(lake)
    incidents.record("e1-w4", IncidentStatus.OPEN, "monitor", cause="drift")
    incidents.record("e1-w4", "escalated", "someone")
    with pytest.raises(UserError, match=r"^incidents row e1-w4 is not one this mlray reads: status: ") as caught:
        incidents.all()
    assert "\n" not in str(caught.value)
