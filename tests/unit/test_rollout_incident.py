"""The rollout owns its incident: the retraining job starts the rollout with the incident's id and ends; the rollout
controller records the verdict (promoted, rolled back, stopped by hand) on the incident, once, on a real local Delta lake
(no Ray: the control plane is a fake holding the rollout's state, as `mlray.serve.control` would)."""


import pytest

from mlray.audit import AuditLog
from mlray.control.state import INCIDENT_CLOSED, IncidentStatus, RolloutState, RolloutStatus
from mlray.incidents import TABLE, Incidents, record_rollout_outcome
from mlray.lake import Lake
from mlray.lake.state import SERVING_STATE, StateTable
from mlray.rollout.controller import Rollout
from mlray.spec import PlatformSpec, parse_spec, starter_spec

INCIDENT = "e1a2-w7"


@pytest.fixture
def spec(tmp_path):
    return parse_spec(starter_spec()).model_copy(update={"platform": PlatformSpec(state_dir=str(tmp_path))})


@pytest.fixture
def incidents(spec):
    found = Incidents(Lake.from_platform(spec.platform))
    found.record(INCIDENT, IncidentStatus.OPEN, "monitor", cause="drift", detail="3 columns drifted")
    found.record(INCIDENT, IncidentStatus.SUBMITTED, "monitor", job_id=f"mlray-x-retrain-{INCIDENT}")
    found.record(INCIDENT, IncidentStatus.RETRAINED, f"job:{INCIDENT}", challenger="3")
    return found


class FakeControlPlane:
    """The control plane's rollout part: a compare-and-swap on the rollout's revision; a change by hand stops it."""

    def __init__(self, rollout: dict | None):
        self.rollout, self.revision, self.audit, self.reasons = rollout, 1, [], []

    def snapshot(self) -> dict:
        return {"rollout": None if self.rollout is None else dict(self.rollout), "rollout_revision": self.revision}

    def update_rollout(self, expected, rollout, actor, plan=None, audit=(), promote=None, tag=None) -> dict:
        assert expected == self.revision, "a stale change"
        self.rollout, self.revision = rollout, self.revision + 1
        self.audit += [entry["action"] for entry in audit]
        self.reasons += [entry["reason"] for entry in audit]
        return self.snapshot()

    def stop_by_hand(self, why: str) -> None:
        self.rollout = self.rollout | {"status": RolloutStatus.STOPPED, "reason": why}
        self.revision += 1


@pytest.fixture
def plane(monkeypatch, spec):
    from mlray.serve import control, deploy

    state = RolloutState(champion="2", challenger="3", step=1, step_started="2026-01-01T00:00:00+00:00", incident=INCIDENT,
                         rules=spec.rollout.model_dump(mode="json"))
    fake = FakeControlPlane(state.model_dump(mode="json"))
    monkeypatch.setattr(control, "client", lambda _spec, *args, **kwargs: fake)
    monkeypatch.setattr(deploy, "check_served", lambda *args: None)
    monkeypatch.setattr(Rollout, "_publish", lambda self: None)
    return fake


def events(incidents: Incidents) -> list[str]:
    return [e.status for e in incidents.get(INCIDENT).events]


def test_a_rollback_records_its_outcome_on_the_incident_once(spec, incidents, plane):
    rollout = Rollout(spec)
    rollout.rollback("too slow", actor="user:ana")
    incident = incidents.get(INCIDENT)
    assert incident.status == IncidentStatus.ROLLED_BACK and incident.status in INCIDENT_CLOSED
    assert incident.challenger == "3" and incident.events[-1].actor == "user:ana"
    assert incident.events[-1].detail == "v3: rollout rolled_back (too slow)"
    assert plane.audit == ["canary.rollback", "canary.rollback.requested"]
    assert [e["action"] for e in AuditLog(spec.platform).read()] == ["retrain.rolled_back"]
    lake = Lake.from_platform(spec.platform)
    version = lake.latest_version(TABLE)
    rollout.tick()  # the ended rollout again: recorded already, nothing is written
    Rollout(spec).tick()  # a restarted controller: one idempotent write, which lands nothing
    assert lake.latest_version(TABLE) == version and events(incidents).count("rolled_back") == 1
    assert len(AuditLog(spec.platform).read()) == 1


def test_a_promotion_closes_the_incident_promoted(spec, incidents, plane):
    Rollout(spec).promote("looks right", actor="user:ana")
    assert events(incidents) == ["open", "submitted", "retrained", "promoted"]


def test_a_rollout_stopped_by_hand_is_seen_at_the_next_tick_and_closes_the_incident(spec, incidents, plane):
    rollout = Rollout(spec)
    plane.stop_by_hand("champion set to v2 by user:ana")
    rollout.tick()
    incident = incidents.get(INCIDENT)
    assert incident.status == IncidentStatus.STOPPED and "champion set to v2 by user:ana" in incident.events[-1].detail
    assert incident.events[-1].actor == "controller:rollout-controller"


def test_a_failed_incident_write_is_retried_by_the_next_tick(spec, incidents, plane, monkeypatch):
    real = Incidents.record

    def lake_down(*args, **kwargs):
        raise OSError("the lake is unreachable")

    monkeypatch.setattr(Incidents, "record", lake_down)
    rollout = Rollout(spec)
    rollout.rollback("too slow", actor="user:ana")  # the decision is committed; the incident write failed
    assert plane.rollout["status"] == RolloutStatus.ROLLED_BACK
    monkeypatch.setattr(Incidents, "record", real)
    assert incidents.get(INCIDENT).status == IncidentStatus.RETRAINED
    rollout.tick()
    assert incidents.get(INCIDENT).status == IncidentStatus.ROLLED_BACK


def test_a_rollout_without_an_incident_records_nothing(spec, plane):
    plane.rollout = plane.rollout | {"incident": None}
    Rollout(spec).rollback("too slow", actor="user:ana")
    assert not Lake.from_platform(spec.platform).exists(TABLE)


def test_old_rollout_states_without_an_incident_still_load(spec, plane):
    plane.rollout = {k: v for k, v in plane.rollout.items() if k != "incident"}
    assert Rollout(spec).status()["incident"] is None


def test_the_outcome_is_recorded_once_whoever_records_it(spec, incidents):
    rollout = RolloutState(champion="2", challenger="3", incident=INCIDENT)
    assert not record_rollout_outcome(incidents, rollout, "controller")  # not ended yet
    assert not record_rollout_outcome(incidents, None, "controller")
    unanswered = rollout.model_copy(update={"status": RolloutStatus.PROMOTED, "incident": None})
    assert not record_rollout_outcome(incidents, unanswered, "controller")
    ended = rollout.model_copy(update={"status": RolloutStatus.PROMOTED, "reason": "every step passed"})
    written = []
    assert record_rollout_outcome(incidents, ended, "controller", written.append)
    assert not record_rollout_outcome(incidents, ended, "monitor", written.append)  # the monitor's backstop
    assert [e["action"] for e in written] == ["retrain.promoted"]
    assert events(incidents) == ["open", "submitted", "retrained", "promoted"]


class Jobs:
    """The Jobs API of the monitor (its `JobSubmitter`), where every job has ended as `job`."""

    def __init__(self, job: str):
        self.job = job

    def submit(self, incident_id: str) -> tuple[str, bool]:
        raise AssertionError("no job is submitted here")

    def status(self, submission_id: str) -> str | None:
        return self.job


@pytest.mark.parametrize("job", ["SUCCEEDED", "STOPPED"])
def test_the_monitor_leaves_a_retrained_incident_to_its_rollout_once_the_job_ended(spec, incidents, job):
    from mlray.monitor.watch import Monitor

    monitor = Monitor(spec, jobs=Jobs(job))
    serving = StateTable(Lake.from_platform(spec.platform), SERVING_STATE)
    rollout = {"champion": "2", "challenger": "3", "status": "running", "reason": "", "incident": INCIDENT}
    revision = serving.write({"plan": None, "rollout": rollout, "rollout_revision": 1}, 0)
    monitor.retraining_jobs.follow()  # the rollout runs: the incident stays retrained, however long it takes
    assert incidents.get(INCIDENT).status == IncidentStatus.RETRAINED
    serving.write({"plan": None, "rollout": rollout | {"status": "rolled_back", "reason": "2 failed analyses"},
                   "rollout_revision": 2}, revision)
    monitor.retraining_jobs.follow()  # ended, and its controller did not record it (it was down): the monitor does
    assert incidents.get(INCIDENT).status == IncidentStatus.ROLLED_BACK
    assert "retrain.failed" not in [e["action"] for e in AuditLog(spec.platform).read()]


def test_the_monitor_still_fails_a_retrained_incident_whose_job_ended_without_starting_its_rollout(
        spec, incidents, monkeypatch):
    from mlray.monitor.watch import Monitor

    monitor = Monitor(spec, jobs=Jobs("STOPPED"))  # killed between registering the challenger and starting its rollout
    monkeypatch.setattr("mlray.monitor.retraining.alert", lambda *args: None)
    monitor.retraining_jobs.follow()
    incident = incidents.get(INCIDENT)
    assert incident.status == IncidentStatus.FAILED and "ended STOPPED" in incident.events[-1].detail


def test_a_spec_that_still_sets_the_retired_rollout_timeout_loads():
    spec = parse_spec(starter_spec() + "\nmonitor:\n  retrain:\n    rollout_timeout: 3h\n")
    assert spec.monitor.retrain.mode == "auto"  # accepted, and nothing reads it any more


def logged_step(spec, incident: str | None):
    """A shadow step of the drift case in the lake (the same requests scored by both versions) and the champion's
    labels only (the challenger's feedback has not arrived): the analysis weighs its divergence with the incident."""
    from datetime import datetime, timezone

    import pyarrow as pa
    from test_rollout_divergence import SCALE, drifted_world, served

    from mlray.lake.inference import LABELS_SCHEMA, inference_log_schema

    lake, now = Lake.from_platform(spec.platform), datetime.now(timezone.utc)
    inputs, truth = drifted_world()
    champion, labels = served(inputs, truth, "a")
    retrained, _ = served(inputs, truth, "b", reads_as=SCALE)
    schema = inference_log_schema(spec.train_table, ["amount"])
    rows = [r | {"at": now, "model_version": version, "pinned": False, "inputs": {"amount": 1.0}}
            for version, records in (("2", champion), ("3", retrained)) for r in records]
    lake.create(spec.serve.inference_log_table, schema)
    lake.append(spec.serve.inference_log_table, pa.Table.from_pylist(rows, schema=schema))
    lake.create(spec.serve.labels_table, LABELS_SCHEMA)
    lake.append(spec.serve.labels_table, pa.Table.from_pylist(
        [{"request_id": r, "row": i, "label": label, "at": now} for (r, i), label in labels.items()], schema=LABELS_SCHEMA))
    return {"incident": incident, "step": 0, "step_started": "2026-01-01T00:00:00+00:00", "started": "2026-01-01T00:00:00+00:00"}


def test_a_step_of_a_challenger_that_answers_an_incident_passes_its_divergence_and_the_audit_says_why(spec, plane):
    plane.rollout = plane.rollout | logged_step(spec, INCIDENT)
    state = Rollout(spec).tick(force=True)
    assert state["step"] == 1 and state["failures"] == 0
    [analysis] = state["history"]
    assert analysis["verdict"] == "pass" and analysis["incident"] == INCIDENT
    assert f"answers incident {INCIDENT}; no labels yet" in analysis["evidence"][0]
    assert plane.audit == ["canary.step"]
    assert plane.reasons[0].startswith("step 2/5: 5.0; score_divergence 0.") and "noted: answers incident" in plane.reasons[0]


def test_the_same_step_without_an_incident_fails_as_before(spec, plane):
    plane.rollout = plane.rollout | logged_step(spec, None)
    state = Rollout(spec).tick(force=True)
    assert state["step"] == 0 and state["failures"] == 1 and state["history"][0]["verdict"] == "fail"
    assert plane.audit == ["canary.check_failed"]
    assert "score_divergence" in plane.reasons[0] and "(no incident behind the challenger" in plane.reasons[0]
