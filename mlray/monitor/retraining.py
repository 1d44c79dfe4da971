"""Acting on what the windows showed: the retraining policy opens an incident and submits its job (or waits for
approval); the jobs it submitted are followed until the rollout they start owns the incident, or they fail. Every id
derives from the window or schedule slot (the incident) and the incident (the job), so doing anything twice, after a
restart, does it once."""

from __future__ import annotations

import logging
from typing import Callable

from mlray.control.clock import Clock
from mlray.control.ports import AuditSink, JobSubmitter, ServingView
from mlray.control.state import INCIDENT_FOLLOWED, Incident, IncidentStatus, MonitorCheckpoint, RolloutState
from mlray.incidents import Incidents, record_rollout_outcome
from mlray.metrics import monitor as ray_gauges
from mlray.monitor.alerts import alert
from mlray.monitor.checkpoint import ACTOR
from mlray.monitor.policy import Trigger, decide
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)


class RetrainingJobs:
    """Submits an incident's retraining job and follows the jobs submitted: a job that ended without its outcome
    fails its incident (an alert, never a second job); a `retrained` incident whose job started its challenger's
    rollout belongs to that rollout, whose outcome closes it."""

    def __init__(self, spec: ProjectSpec, incidents: Incidents, audit: AuditSink, jobs: JobSubmitter,
                 serving: ServingView):
        self.spec, self.incidents, self.audit, self.jobs, self.serving = spec, incidents, audit, jobs, serving

    def submit(self, incident_id: str) -> str:
        sid, submitted = self.jobs.submit(incident_id)
        if self.incidents.record(incident_id, IncidentStatus.SUBMITTED, ACTOR, job_id=sid, detail=f"Ray job {sid}"):
            self.audit.append("retrain.submit", self.spec.name, f"incident {incident_id}", after={"job_id": sid},
                              component=f"monitor:{self.spec.name}")
        log.info("retraining job %s for incident %s (%s)", sid, incident_id, "submitted" if submitted else "existed")
        return sid

    def submit_if_pending(self, incident_id: str) -> None:
        """Submit the incident's job unless it was submitted (or awaits approval, or ended)."""
        if self.incidents.get(incident_id).status in (IncidentStatus.OPEN, IncidentStatus.APPROVED):
            self.submit(incident_id)

    def follow(self) -> None:
        """Submit approved incidents (and open ones whose submission failed, e.g. with the Jobs API down); record a
        job that ended without its outcome as failed. A `retrained` incident whose job started its challenger's
        rollout belongs to that rollout: its controller records the verdict, however long the rollout runs, so the
        job's end (it ends once the rollout started) is no failure."""
        for incident in self.incidents.open():
            status, iid = incident.status, incident.incident_id
            if status == IncidentStatus.APPROVED or (status == IncidentStatus.OPEN
                                                     and self.spec.monitor.retrain.mode == "auto"):
                self.submit(iid)
            elif status in INCIDENT_FOLLOWED and incident.job_id:
                # the job's status first: a job that ended had committed its rollout's start before, so the rollout
                # read after it names the incident
                job = self.jobs.status(incident.job_id)
                if job in ("FAILED", "STOPPED", None) or (job == "SUCCEEDED" and self._still_open(iid)):
                    if status == IncidentStatus.RETRAINED and self._rollout_owns(iid):
                        continue
                    self._job_failed(incident, job)

    def _still_open(self, incident_id: str) -> bool:
        return not self.incidents.get(incident_id).closed

    def _rollout_owns(self, incident_id: str) -> bool:
        """Whether the control plane's rollout answers this incident (its job started it). One that has ended has
        its outcome recorded here too, in case its controller did not (it was down): the write is idempotent by
        incident and status, so the controller's own write and this one land once."""
        rollout = self.serving.rollout()
        if not rollout or rollout.get("incident") != incident_id:
            return False
        record_rollout_outcome(self.incidents, RolloutState.model_validate(rollout), ACTOR,
                               lambda entry: self.audit.append(target=self.spec.name, **entry))
        return True

    def _job_failed(self, incident: Incident, job: str | None) -> None:
        detail = f"retraining job {incident.job_id} " + ({None: "is unknown to the Jobs API",
                                                            "SUCCEEDED": "ended without an outcome"}.get(job)
                                                           or f"ended {job}")
        self.incidents.record(incident.incident_id, IncidentStatus.FAILED, ACTOR, detail=detail)
        self.audit.append("retrain.failed", self.spec.name, detail, component=f"monitor:{self.spec.name}")
        alert(self.spec.name, "job_failed", f"incident {incident.incident_id}: {detail}",
              {"incident_id": incident.incident_id}, self.spec.monitor.alert_webhook)


class RetrainingPolicy:
    """Asks the policy (`policy.decide`) after each window and each schedule slot; on a trigger opens the incident
    `<epoch>-<key>` and submits its job, or leaves it awaiting approval."""

    def __init__(self, spec: ProjectSpec, incidents: Incidents, audit: AuditSink, jobs: RetrainingJobs, clock: Clock,
                 gauges: Callable[[], dict] = ray_gauges):
        self.spec, self.retrain = spec, spec.monitor.retrain
        self.incidents, self.audit, self.jobs, self.clock, self.gauges = incidents, audit, jobs, clock, gauges

    def on_schedule(self, checkpoint: MonitorCheckpoint) -> bool:
        """Evaluate a schedule slot that came since the last; True when the checkpoint changed (a slot passed)."""
        period = self.retrain.schedule
        if period is None:
            return False
        slot = int((self.clock.now() - checkpoint.created) / period)
        if slot <= checkpoint.schedule_slot:
            return False
        self.evaluate(f"s{slot}", checkpoint, schedule_due=True)
        checkpoint.schedule_slot = slot
        return True

    def evaluate(self, key: str, checkpoint: MonitorCheckpoint, schedule_due: bool) -> str | None:
        """The incident this trigger opened (or had opened before a restart: what it started is finished), or None.
        The id depends only on the window (or schedule slot), so doing this twice opens one incident and one job."""
        history = checkpoint.history
        drop = history[-1]["quality_drop"] if history else None
        incidents = self.incidents.all()
        open_ids = [i.incident_id for i in incidents if not i.closed]
        incident_id = f"{checkpoint.epoch}-{key}"
        if any(i.incident_id == incident_id for i in incidents):
            self.jobs.submit_if_pending(incident_id)  # acted on before a restart: finish what it started
            return incident_id
        trigger, why = decide(self.retrain, history, drop, self.clock.now(), [i.opened for i in incidents],
                              open_ids[0] if open_ids else None, schedule_due)
        if trigger is None:
            if why:
                log.info("retraining held back: %s", why)
            return None
        self._open(incident_id, trigger)
        if self.retrain.mode == "approval":
            self.incidents.record(incident_id, IncidentStatus.AWAITING_APPROVAL, ACTOR,
                                  detail=f"approve with `mlray incidents approve {incident_id}`")
            return incident_id
        self.jobs.submit(incident_id)
        return incident_id

    def _open(self, incident_id: str, trigger: Trigger) -> None:
        self.incidents.record(incident_id, IncidentStatus.OPEN, ACTOR, cause=trigger.cause, detail=trigger.detail,
                              evidence=trigger.evidence, windows=trigger.evidence.get("windows", []))
        self.audit.append("incident.open", f"{self.spec.name}", trigger.detail, after={"incident": incident_id,
                          "cause": trigger.cause}, component=f"monitor:{self.spec.name}")
        self.gauges()["incidents"].inc(tags={"model": self.spec.name, "cause": trigger.cause})
        alert(self.spec.name, "incident", f"incident {incident_id} ({trigger.cause}): {trigger.detail}",
              {"incident_id": incident_id, **trigger.evidence}, self.spec.monitor.alert_webhook)
