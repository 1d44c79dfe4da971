"""The retraining job: the closed loop's last leg, run as a Ray job (the monitor submits it; a person can too).

    ray job submit --working-dir . -- python jobs/retrain.py --spec mlray.yaml [--incident ID]

It lands new files from `monitor.retrain.source` (exactly once), trains on the latest validated snapshot (only the
last `monitor.retrain.window` of event time, when set), lets the gate compare the new version with the champion on
the same held-out rows, registers it with a lineage tag naming the incident, and starts the progressive rollout with
the incident's id. The job ends there: the rollout owns the incident from then on, and its controller records the
verdict (promoted, rolled back, or stopped by hand) on the incident when it comes. Every step is an event of the
incident and an entry of the audit log.
Exit codes: 0 done (the challenger's rollout started, it became the first champion, or the gate rejected it),
2 a user error (a failure ends the incident `failed` and the job with an error).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from mlray import dataplane
from mlray.audit import AuditLog, current_principal
from mlray.control.state import IncidentStatus
from mlray.entrypoint import DONE, exit_with, job_parser, run_job
from mlray.incidents import Incidents
from mlray.lake.specs import read_stored_spec
from mlray.monitor.alerts import alert
from mlray.spec import ProjectSpec, load_spec
from mlray.spec.secrets import redact_text

log = logging.getLogger(__name__)


class Retraining:
    def __init__(self, spec: ProjectSpec, incident_id: str | None):
        import ray  # Ray: loaded once the job runs, so `--help` and a wrong flag answer without it

        self.spec = spec
        lake = dataplane.lake_of(spec)
        self.incidents, self.audit = Incidents(lake), AuditLog(spec.platform)
        self.job_id = ray.get_runtime_context().get_job_id()
        self.incident_id = incident_id or self._manual_incident()
        self.incidents.get(self.incident_id)  # a wrong id is a user error, before anything runs
        self.actor = f"job:{self.incident_id}"

    def _manual_incident(self) -> str:
        incident_id = f"manual-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
        self.incidents.record(incident_id, IncidentStatus.OPEN, "user", cause="manual", detail="submitted by hand")
        return incident_id

    def event(self, status: str, detail: str, **fields) -> None:
        self.incidents.record(self.incident_id, status, self.actor, detail=detail, **fields)
        self.audit.append(f"retrain.{status}", self.spec.name, f"incident {self.incident_id}: {detail}",
                          after=fields or None, component="retrain-job")

    def run(self) -> dict:
        try:
            return self._run()
        except Exception as exc:
            detail = redact_text(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", self.spec)
            self.event(IncidentStatus.FAILED, detail)
            alert(self.spec.name, "job_failed", f"incident {self.incident_id}: {detail}",
                  {"incident_id": self.incident_id, "job_id": self.job_id}, self.spec.monitor.alert_webhook)
            raise

    def _run(self) -> dict:
        from mlray.training import train as train_and_admit  # heavy: torch, MLflow and Ray Train (seconds at import)

        retrain = self.spec.monitor.retrain
        self.event(IncidentStatus.RUNNING, f"Ray job {self.job_id}")
        landed = 0
        if retrain.source:
            landed = dataplane.ingest_source(self.spec, retrain.source).rows_landed
        since = datetime.now(timezone.utc) - retrain.window if retrain.window else None
        outcome = train_and_admit(self.spec, self.actor, run_name=f"{self.spec.name}-retrain-{self.incident_id}", since=since,
                              tags={"mlray.incident": self.incident_id})
        summary = {"incident_id": self.incident_id, "rows_landed": landed, "table_version": outcome.table_version,
                   "version": outcome.model_version, "decision": outcome.decision, "metrics": outcome.metrics}
        if outcome.decision == "rejected":
            self.event(IncidentStatus.REJECTED, f"v{outcome.model_version} failed the gate: {'; '.join(outcome.reasons)}",
                       challenger=outcome.model_version)
            alert(self.spec.name, "retrain_rejected", f"incident {self.incident_id}: the retrained model was rejected",
                  summary, self.spec.monitor.alert_webhook)
            return summary | {"outcome": IncidentStatus.REJECTED}
        self.event(IncidentStatus.RETRAINED, f"v{outcome.model_version} registered as {outcome.decision} (table v"
                                f"{outcome.table_version})", challenger=outcome.model_version)
        if outcome.decision == "champion":  # there was no champion: nothing to roll out against
            self.event(IncidentStatus.PROMOTED, f"v{outcome.model_version} is the first champion",
                       challenger=outcome.model_version)
            return summary | {"outcome": IncidentStatus.PROMOTED}
        return summary | {"outcome": self._roll_out(outcome.model_version)}

    def _roll_out(self, version: str) -> str:
        """Start the progressive rollout of `version` for this incident, and end: the rollout owns the incident now
        (its controller records the verdict on it). The incident stays `retrained` until then."""
        from mlray.rollout import controller  # heavy: MLflow and Ray; only a challenger to roll out needs it

        state = controller.client(self.spec).start(version, actor=current_principal(), incident=self.incident_id)
        steps = state["steps"] if state else []
        self.audit.append("retrain.rollout", self.spec.name, f"incident {self.incident_id}: the rollout of v{version} "
                          f"started ({len(steps)} steps); its controller records the verdict on the incident",
                          after={"challenger": version, "steps": steps}, component="retrain-job")
        return IncidentStatus.RETRAINED


def job_spec(args) -> ProjectSpec:
    """--spec when given, else the spec the monitor stored under the lake root, else $MLRAY_SPEC or ./mlray.yaml."""
    if args.spec or not args.stored_spec:
        return load_spec(args.spec)
    return read_stored_spec(args.stored_spec)


def retrain(spec: ProjectSpec, args) -> tuple[dict, int]:
    return Retraining(spec, args.incident).run(), DONE


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--incident", help="The incident this retraining answers (default: a new manual one).")
    parser.add_argument("--stored-spec", help="The spec the monitor stored under the lake root (its URI).")
    return run_job(parser, retrain, argv, load=job_spec)


if __name__ == "__main__":
    exit_with(main())
