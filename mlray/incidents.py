"""Incidents: why a retraining started and how it ended, as an append-only Delta table (`incidents`).

Each row is one event of one incident: opened (with its cause, evidence and windows), waiting for approval,
approved, job submitted, challenger registered (its rollout started), and the outcome: rejected by the gate or
failed (written by the job or the monitor), or promoted, rolled back or stopped by hand (written by the rollout
controller, which owns the incident once the job has started its challenger's rollout: the incident's id travels in
the rollout's state). The monitor, the retraining job, the rollout controller and a person (`mlray incidents
approve`) each append their own events, so writers never conflict; an event carries an id (incident and status), so
a retried write, or the same outcome recorded by two writers, lands once. An incident's state is its events folded
in order. Tables written before the controller owned the outcome may hold `unfinished` (the job stopped following a
long rollout), which still reads as closed.

The module sits beside `mlray.audit` (it imports spec, lake and control only), so the monitor, the retraining job
and the rollout controller all write it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Callable

import pyarrow as pa

from mlray.control.state import ROLLOUT_ENDED, Incident, IncidentStatus, RolloutState, read_row
from mlray.errors import UserError
from mlray.lake import Lake
from mlray.redaction import redact_credentials

TABLE = "incidents"
SCHEMA = pa.schema([
    pa.field("incident_id", pa.string(), nullable=False),
    pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("actor", pa.string(), nullable=False),
    pa.field("cause", pa.string()),
    pa.field("detail", pa.string()),
    pa.field("evidence", pa.string()),  # JSON
    pa.field("windows", pa.list_(pa.int64())),
    pa.field("job_id", pa.string()),
    pa.field("challenger", pa.string()),
])
FIELDS = ("cause", "detail", "evidence", "windows", "job_id", "challenger")


def submission_id(project: str, incident_id: str) -> str:
    """The Ray job's submission id: derived from the incident only, so every attempt to submit it names one job."""
    return f"mlray-{project}-retrain-{incident_id}"


class Incidents:
    def __init__(self, lake: Lake):
        self.lake = lake

    def record(self, incident_id: str, status: str, actor: str, **fields) -> bool:
        """Append one event (once per incident and status); True when it was new."""
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown incident fields {sorted(unknown)}")
        row = {"incident_id": incident_id, "at": datetime.now(timezone.utc), "status": status, "actor": actor} | {
            k: redact_credentials(json.dumps(v, default=str)) if k == "evidence" else
            redact_credentials(v) if k == "detail" and v else v for k, v in fields.items()}
        data = pa.Table.from_pylist([row], schema=SCHEMA)
        return self.lake.append(TABLE, data, batch_id=f"incident:{incident_id}:{status}", schema=SCHEMA).committed

    def all(self) -> list[Incident]:
        """Every incident as its events folded in order, newest incident first."""
        if not self.lake.exists(TABLE):
            return []
        found: dict[str, dict] = {}
        for event in sorted(self.lake.read(TABLE).to_pylist(), key=lambda e: e["at"]):
            fold(found.setdefault(event["incident_id"], {"incident_id": event["incident_id"], "opened": event["at"],
                                                         "events": []}), event)
        incidents = [read_row(Incident, TABLE, incident_id, fields) for incident_id, fields in found.items()]
        return sorted(incidents, key=lambda i: i.opened, reverse=True)

    def get(self, incident_id: str) -> Incident:
        found = next((i for i in self.all() if i.incident_id == incident_id), None)
        if found is None:
            raise UserError(f"no incident {incident_id!r} (see `mlray incidents list`)")
        return found

    def open(self) -> list[Incident]:
        """Incidents not yet closed, oldest first."""
        return [i for i in reversed(self.all()) if not i.closed]


def fold(incident: dict, event: dict) -> None:
    """One event into its incident's fields: its status and time, and each field it records."""
    incident["status"], incident["updated"] = event["status"], event["at"]
    for key in FIELDS:
        if event[key] is not None:
            incident[key] = json.loads(event[key]) if key == "evidence" else event[key]
    incident["events"].append({k: event[k] for k in ("at", "status", "actor", "detail")})


def record_rollout_outcome(incidents: Incidents, rollout: RolloutState | None, actor: str,
                           audit: Callable[[dict], object] | None = None) -> bool:
    """Record how a rollout that answers an incident ended (promoted, rolled back, stopped by hand) as the incident's
    outcome, and, when this call recorded it, hand `audit` the entry `retrain.<status>` (action, component, reason,
    after; its id from the incident and status). `rollout`: the rollout's state as the control plane holds it
    (status, challenger, reason, incident). Idempotent by (incident, status), so the controller after its decision, a
    restarted controller and the monitor may each call it. True when this call recorded it; False when the rollout
    answers no incident, has not ended, or its outcome was recorded already."""
    if rollout is None or not rollout.incident or rollout.status not in ROLLOUT_ENDED:
        return False
    challenger, status = rollout.challenger, IncidentStatus(rollout.status)
    how = f"v{challenger}: rollout {status} ({rollout.reason or 'no reason given'})"
    if not incidents.record(rollout.incident, status, actor, challenger=challenger, detail=how):
        return False
    if audit is not None:
        audit({"action": f"retrain.{status}", "component": actor, "reason": f"incident {rollout.incident}: {how}",
               "after": {"challenger": challenger}, "id": f"incident:{rollout.incident}:{status}"})
    return True
