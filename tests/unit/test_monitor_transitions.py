"""The monitor's transitions on fakes (`monitor_fakes`: clock, serving view, Jobs API, reference, detectors, metrics)
over a real local lake: no Ray, no MLflow, no Alibi Detect.

Transition                                                                   Test
---------------------------------------------------------------------------  -----------------------------------------
one step: report → checkpoint per window; a trigger opens its incident,      test_the_writes_of_one_step_in_order
  audits it and submits its job before the window's checkpoint
killed just before any write of a step (a checkpoint written, the step       test_a_monitor_killed_before_any_write_
  interrupted before the next write) → a new monitor on the same state         resumes_without_rechecking_or_skipping_
  resumes: no reported window checked again, none skipped, one incident,       a_window (one case per write)
  one job
auto: drift → incident open → submitted → job running → retrained (its       test_auto_an_incident_goes_from_open_to_
  rollout owns it, the job's end is no failure) → the rollout ends →           closed_by_its_rollout
  closed (the monitor's backstop records the outcome)
approval: open → awaiting_approval (no job, no second incident) →            test_approval_an_incident_waits_then_is_
  approved → submitted → retrained → closed by the controller's                submitted_and_closed_by_the_rollouts_
  `record_rollout_outcome`                                                     outcome
a job that fails → incident failed: one alert, never a second job (more      test_a_failed_job_fails_its_incident_with_
  drift, a restart)                                                            one_alert_and_no_second_job
a job unknown to the Jobs API, or succeeded without an outcome → failed      test_a_job_that_vanished_or_ended_without_
                                                                               an_outcome_fails_its_incident
the champion changes (ServingView) → the reference is rebuilt once, the      test_a_champion_change_seen_through_
  checkpoint names the new champion                                            serving_resets_the_reference
no champion yet → the step fails and the window waits (none skipped)         test_without_a_champion_the_window_waits
a schedule slot passes (fake clock) → one scheduled incident per slot        test_a_schedule_slot_opens_one_incident
compact_every passes (fake clock) → upkeep runs and is checkpointed          test_upkeep_runs_when_its_period_passed
an old checkpoint document reads and writes back the same JSON               test_an_old_checkpoint_reads_and_
                                                                               serialises_as_before
a checkpoint with an unknown field → refused in one line                     test_a_checkpoint_with_an_unknown_field_
                                                                               is_refused
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from monitor_fakes import FakeClock, FakeDrift, FakeGauges, FakeJobs, FakeReferences, FakeServing

from mlray.audit import AuditLog
from mlray.control.state import IncidentStatus, MonitorCheckpoint, RolloutState, WindowReport
from mlray.errors import UserError
from mlray.incidents import Incidents, record_rollout_outcome
from mlray.lake import Lake
from mlray.lake.state import StateTable
from mlray.monitor import checks
from mlray.monitor.checkpoint import STATE_TABLE, read_checkpoint
from mlray.monitor.watch import Monitor
from mlray.serve.logbook import InferenceLog, create_tables, log_schema
from mlray.window_reports import read_reports, write_report

WINDOW = 100
CALM, SHIFTED = 10.0, 500.0  # amounts: FakeDrift calls a window with one above 100 drifted


class World:
    """One project's lake with its serving tables, and the fakes a monitor of it talks to."""

    def __init__(self, project, **retrain):
        retrain = project.monitor.retrain.model_copy(update={"min_drifted_features": 1, "drifted_windows": 1,
                                                             "of_windows": 1, **retrain})
        rules = project.monitor.model_copy(update={"window_rows": WINDOW, "min_window_rows": 10, "retrain": retrain})
        self.spec = project.model_copy(update={"monitor": rules})
        self.lake = Lake.from_platform(self.spec.platform)
        create_tables(self.spec, self.lake)
        self.log = InferenceLog(self.lake, self.spec.serve.inference_log_table, log_schema(self.spec))
        self.clock, self.serving, self.jobs = FakeClock(), FakeServing("1"), FakeJobs()
        self.references, self.drift, self.gauges = FakeReferences(), FakeDrift(), FakeGauges()
        self.incidents, self.commits = Incidents(self.lake), 0

    def monitor(self) -> Monitor:
        """A monitor (a new one: a restart) on this lake and these fakes."""
        return Monitor(self.spec, clock=self.clock, serving=self.serving, jobs=self.jobs,
                       load_reference=self.references, make_detectors=self.drift, gauges=self.gauges)

    def watching(self) -> Monitor:
        monitor = self.monitor()
        monitor.status()  # its checkpoint is written: it watches traffic from here on
        return monitor

    def serve(self, *amounts: float) -> None:
        """One commit of the log, one row per amount, in this order in the stream (request ids sort so)."""
        for i, amount in enumerate(amounts):
            self.log.record(f"{self.commits:03d}-{i:05d}", "1", [{"amount": amount}], [{"prediction": True}], 1.0)
        self.commits += 1
        assert self.log.flush() == len(amounts)

    def reports(self) -> list[WindowReport]:
        return sorted(read_reports(self.lake), key=lambda r: r.seq)

    def statuses(self, incident_id: str) -> list[str]:
        return [e.status for e in self.incidents.get(incident_id).events]

    def audit(self) -> list[str]:
        return sorted(e["action"] for e in AuditLog(self.spec.platform).read())


@pytest.fixture
def world(project) -> World:
    return World(project)


@pytest.fixture
def alerts(monkeypatch) -> list[tuple[str, str]]:
    """The alerts raised, as (kind, message)."""
    raised = []

    def alert(project, kind, message, details=None, webhook=None):
        raised.append((kind, message))

    monkeypatch.setattr("mlray.monitor.retraining.alert", alert)
    monkeypatch.setattr("mlray.monitor.checks.alert", alert)
    return raised


def drifted_traffic(world: World) -> None:
    """Four windows in three commits cut across them: windows 0 and 1 calm, 2 and 3 shifted."""
    world.serve(*[CALM] * 150)
    world.serve(*[CALM] * 50, *[SHIFTED] * 100)
    world.serve(*[SHIFTED] * 100)


# ---------------------------------------------------------------------- killed at every write

class Killed(BaseException):
    """A kill -9: nothing after it runs, no handler sees it."""


class Writes:
    """Every write a step makes (checkpoint, report, incident event, audit entry, job submission), counted; the one
    numbered `kill_at` is not made: the process dies just before it."""

    def __init__(self):
        self.made: list[str] = []
        self.kill_at: int | None = None

    def wrap(self, what: str, write):
        def counted(*args, **kwargs):
            if self.kill_at == len(self.made) + 1:
                self.kill_at = None
                raise Killed(what)
            self.made.append(what)
            return write(*args, **kwargs)

        return counted


@pytest.fixture
def writes(monkeypatch) -> Writes:
    writes = Writes()
    monkeypatch.setattr(StateTable, "write", writes.wrap("checkpoint", StateTable.write))
    monkeypatch.setattr(checks, "write_report", writes.wrap("report", write_report))
    monkeypatch.setattr(Incidents, "record", writes.wrap("incident", Incidents.record))
    monkeypatch.setattr(AuditLog, "append", writes.wrap("audit", AuditLog.append))
    monkeypatch.setattr(FakeJobs, "submit", writes.wrap("job", FakeJobs.submit))
    return writes


STEP_WRITES = ["report", "checkpoint",  # window 0
               "report", "checkpoint",  # window 1
               "report", "incident", "audit", "job", "incident", "audit", "checkpoint",  # window 2: open, submit
               "report", "checkpoint"]  # window 3: held back (the incident is open)


def test_the_writes_of_one_step_in_order(world, writes, alerts):
    monitor = world.watching()
    drifted_traffic(world)
    writes.made.clear()
    assert [w["verdict"] for w in monitor.step()["windows"]] == ["ok", "ok", "drift", "drift"]
    assert writes.made == STEP_WRITES


@pytest.mark.parametrize("kill_at", range(1, len(STEP_WRITES) + 1),
                         ids=[f"{n}-{w}" for n, w in enumerate(STEP_WRITES, 1)])
def test_a_monitor_killed_before_any_write_resumes_without_rechecking_or_skipping_a_window(
        world, writes, alerts, kill_at):
    world.watching()
    drifted_traffic(world)
    writes.made.clear()
    writes.kill_at = kill_at
    with pytest.raises(Killed):
        world.monitor().step()
    assert len(writes.made) == kill_at - 1  # every write before the kill landed, none after
    restarted = world.monitor()
    restarted.step()
    reports = world.reports()
    assert [r.seq for r in reports] == [0, 1, 2, 3] and sum(r.rows for r in reports) == 4 * WINDOW
    assert all(a.end == b.start for a, b in zip(reports, reports[1:])), "windows must chain"
    assert [r.verdict for r in reports] == ["ok", "ok", "drift", "drift"]
    # a window is checked again only when the kill came before its report was written
    assert len(world.drift.checked) == 4 + (STEP_WRITES[kill_at - 1] == "report")
    assert restarted.checkpoint.seq == 4 and [h["seq"] for h in restarted.checkpoint.history] == [0, 1, 2, 3]
    [incident] = world.incidents.all()
    assert incident.incident_id == f"{restarted.checkpoint.epoch}-w2" and incident.status == "submitted"
    assert world.jobs.submitted == [f"retrain-{incident.incident_id}"]
    audit = world.audit()
    assert audit.count("incident.open") <= 1 and audit.count("retrain.submit") <= 1
    assert [w["rows"] for w in restarted.step()["windows"]] == []  # nothing left, nothing done twice


# ---------------------------------------------------------------------- an incident's life

def test_auto_an_incident_goes_from_open_to_closed_by_its_rollout(world, alerts):
    monitor = world.watching()
    world.serve(*[SHIFTED] * WINDOW)
    monitor.step()
    [incident] = world.incidents.all()
    iid, sid = incident.incident_id, incident.job_id
    assert world.statuses(iid) == ["open", "submitted"] and world.jobs.submitted == [sid]
    world.jobs.jobs[sid] = "RUNNING"
    monitor.step()
    assert world.statuses(iid) == ["open", "submitted"]
    # the job registers its challenger and starts its rollout, which names the incident; then it ends
    world.incidents.record(iid, IncidentStatus.RETRAINED, "job", challenger="2")
    world.serving.current_rollout = {"champion": "1", "challenger": "2", "status": "running", "reason": "",
                                     "incident": iid}
    world.jobs.jobs[sid] = "SUCCEEDED"
    monitor.step()
    assert world.incidents.get(iid).status == IncidentStatus.RETRAINED  # the running rollout owns it
    world.serving.current_rollout |= {"status": "promoted", "reason": "every step passed"}
    monitor.step()  # its controller was down when it ended: the monitor records the outcome
    assert world.statuses(iid) == ["open", "submitted", "retrained", "promoted"]
    assert world.incidents.open() == [] and world.jobs.submitted == [sid]
    assert "retrain.failed" not in world.audit() and "retrain.promoted" in world.audit()
    assert [kind for kind, _ in alerts] == ["drift", "incident"]


def test_approval_an_incident_waits_then_is_submitted_and_closed_by_the_rollouts_outcome(project, alerts):
    world = World(project, mode="approval")
    monitor = world.watching()
    world.serve(*[SHIFTED] * WINDOW)
    monitor.step()
    [incident] = world.incidents.all()
    iid = incident.incident_id
    assert world.statuses(iid) == ["open", "awaiting_approval"] and world.jobs.submitted == []
    world.serve(*[SHIFTED] * WINDOW)
    monitor.step()  # waiting for approval: no job, and no second incident
    assert world.jobs.submitted == [] and len(world.incidents.all()) == 1
    world.incidents.record(iid, IncidentStatus.APPROVED, "user:ana")
    monitor.step()
    sid = world.incidents.get(iid).job_id
    assert world.statuses(iid)[-2:] == ["approved", "submitted"] and world.jobs.submitted == [sid]
    world.incidents.record(iid, IncidentStatus.RETRAINED, "job", challenger="2")
    rollout = {"champion": "1", "challenger": "2", "status": "running", "reason": "", "incident": iid}
    world.serving.current_rollout, world.jobs.jobs[sid] = rollout, "SUCCEEDED"
    monitor.step()
    assert world.incidents.get(iid).status == IncidentStatus.RETRAINED
    ended = rollout | {"status": "rolled_back", "reason": "2 failed analyses"}
    assert record_rollout_outcome(world.incidents, RolloutState(**ended), "controller")  # the controller, after its decision
    world.serving.current_rollout = ended
    monitor.step()  # the monitor's backstop finds it recorded
    assert world.statuses(iid) == ["open", "awaiting_approval", "approved", "submitted", "retrained", "rolled_back"]
    assert world.jobs.submitted == [sid] and "retrain.failed" not in world.audit()


def test_a_failed_job_fails_its_incident_with_one_alert_and_no_second_job(world, alerts):
    monitor = world.watching()
    world.serve(*[SHIFTED] * WINDOW)
    monitor.step()
    [incident] = world.incidents.all()
    world.jobs.jobs[incident.job_id] = "FAILED"
    monitor.step()
    assert world.incidents.get(incident.incident_id).status == IncidentStatus.FAILED
    for _ in range(2):  # more drift within the cooldown, and a restart: nothing is submitted again
        world.serve(*[SHIFTED] * WINDOW)
        world.monitor().step()
    assert world.jobs.submitted == [incident.job_id] and len(world.incidents.all()) == 1
    assert [kind for kind, _ in alerts].count("job_failed") == 1
    assert world.audit().count("retrain.failed") == 1


@pytest.mark.parametrize("job, detail", [(None, "is unknown to the Jobs API"), ("SUCCEEDED", "ended without an outcome")])
def test_a_job_that_vanished_or_ended_without_an_outcome_fails_its_incident(world, alerts, job, detail):
    monitor = world.watching()
    world.serve(*[SHIFTED] * WINDOW)
    monitor.step()
    [incident] = world.incidents.all()
    if job is None:
        del world.jobs.jobs[incident.job_id]
    else:
        world.jobs.jobs[incident.job_id] = job
    monitor.step()
    failed = world.incidents.get(incident.incident_id)
    assert failed.status == IncidentStatus.FAILED and detail in failed.events[-1].detail


# ---------------------------------------------------------------------- the reference, the clock

def test_a_champion_change_seen_through_serving_resets_the_reference(world, alerts):
    monitor = world.watching()
    world.serve(*[CALM] * WINDOW)
    monitor.step()
    assert world.references.loaded == ["1"] and monitor.checkpoint.champion == "1"
    world.serving.serving_champion = "2"  # a promotion, committed by the control plane
    world.serve(*[CALM] * WINDOW)
    monitor.step()
    world.serve(*[CALM] * WINDOW)
    monitor.step()
    assert world.references.loaded == ["1", "2"], "built once per champion"
    assert [r.champion for r in world.reports()] == ["1", "2", "2"] and monitor.checkpoint.champion == "2"
    assert world.monitor().status()["champion"] == "2"  # checkpointed


def test_without_a_champion_the_window_waits(world, alerts):
    monitor = world.watching()
    world.serving.serving_champion = None
    world.serve(*[CALM] * WINDOW)
    with pytest.raises(RuntimeError, match="no champion"):
        monitor.step()
    world.serving.serving_champion = "1"
    assert [w["seq"] for w in monitor.step()["windows"]] == [0]


def test_a_schedule_slot_opens_one_incident(project, alerts):
    world = World(project, schedule=timedelta(days=7))
    monitor = world.watching()
    monitor.step()
    world.clock.advance(timedelta(days=6))
    monitor.step()
    assert world.incidents.all() == []
    world.clock.advance(timedelta(days=1, seconds=1))
    monitor.step()
    world.monitor().step()  # a restart in the same slot: nothing new
    [incident] = world.incidents.all()
    assert incident.cause == "schedule" and incident.incident_id.endswith("-s1")
    assert monitor.checkpoint.schedule_slot == 1 and world.jobs.submitted == [incident.job_id]


def test_upkeep_runs_when_its_period_passed(world, alerts):
    monitor = world.watching()
    started = monitor.checkpoint.last_upkeep
    world.serve(*[CALM] * 30)
    world.clock.advance(world.spec.monitor.compact_every - timedelta(seconds=1))
    monitor.step()
    revision = monitor.checkpoints.revision
    assert monitor.checkpoint.last_upkeep == started
    world.clock.advance(timedelta(seconds=2))
    monitor.step()
    assert monitor.checkpoint.last_upkeep == world.clock.now() and monitor.checkpoints.revision == revision + 1
    assert world.monitor().status()["revision"] == revision + 1


# ---------------------------------------------------------------------- the checkpoint

OLD = {"epoch": "5f0c2a91", "created": "2026-11-26T09:15:02.183211+00:00", "cursor": [7, 40], "seq": 12,
       "labels_version": 3, "history": [{"seq": 11, "drifted": ["amount"], "score_drift": False,
                                         "quality_drop": None, "rows": 1000}],
       "quality": {"1": [["r1:0", "true", "true", 0.91]]}, "pending_labels": [["r2", 0, "false",
                                                                                 "2026-11-26T09:20:00+00:00"]],
       "champion": "1", "schedule_slot": 0, "last_upkeep": "2026-11-26T09:15:02.183460+00:00"}


def test_an_old_checkpoint_reads_and_serialises_as_before(world):
    table = StateTable(world.lake, STATE_TABLE)
    table.write(OLD, 0, writer="monitor")
    monitor = world.monitor()
    status = monitor.status()
    assert status["epoch"] == "5f0c2a91" and status["cursor"] == [7, 40] and status["windows"] == 12
    assert status["labelled"] == {"1": 1} and status["pending_labels"] == 1
    assert json.dumps(monitor.checkpoint.document()) == json.dumps(OLD)
    monitor._save()  # written back unchanged
    assert table.read() == (2, OLD)
    assert MonitorCheckpoint().document().keys() == OLD.keys()


def test_a_checkpoint_with_an_unknown_field_is_refused(world):
    StateTable(world.lake, STATE_TABLE).write(OLD | {"window_seconds": 3}, 0)
    with pytest.raises(UserError) as refused:
        world.monitor().status()
    assert str(refused.value) == ("monitor_state revision 1 is not a document this mlray reads: window_seconds: "
                                  "Extra inputs are not permitted")
    assert read_checkpoint(0, None) is None
