"""`Rollout.tick` driven tick by tick without Ray: a fake clock, a fake control plane holding the rollout's state (as
`mlray.serve.control` would), and real inference-log and label tables on a local lake, written as the ingress writes
them.

| transition | test |
|---|---|
| a tick before the step's interval is over changes nothing | test_a_step_passes_then_the_last_step_promotes_... |
| step passes → next step, its plan | test_a_step_passes_then_the_last_step_promotes_... |
| 100% step: the champion's traffic before the rollout is the baseline | test_a_step_passes_then_the_last_step_promotes_... |
| last step passes → promoted, the alias moves | test_a_step_passes_then_the_last_step_promotes_... |
| too few requests → waiting, the step goes on | test_too_few_requests_wait_and_the_step_goes_on |
| step fails → retried on fresh traffic → rolled back at failure_limit | test_a_failing_step_is_retried_then_rolled_back_... |
| a change by hand (weights, rollback, alias) stops the rollout | test_a_rollout_stopped_by_hand_is_left_alone_... |
| divergence weighed with the incident in a real tick | tests/unit/test_rollout_incident.py |
| crash between the state commit and the alias move | tests/unit/test_control_plane_transitions.py |
| incident closed by the rollout's outcome | tests/unit/test_rollout_incident.py |
"""

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from test_rollout_incident import FakeControlPlane

from mlray.control.state import RolloutState, RolloutStatus
from mlray.lake import Lake
from mlray.lake.inference import LABELS_SCHEMA, inference_log_schema
from mlray.rollout.controller import Rollout
from mlray.serve.routing import TrafficPlan
from mlray.spec import PlatformSpec, RolloutChecks, RolloutSpec, parse_spec, starter_spec

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
INTERVAL = timedelta(minutes=2)
RULES = RolloutSpec(steps=[50, 100], interval="2m", min_requests=5, failure_limit=2,
                    checks=RolloutChecks(max_error_rate=0.05, max_p99_latency_ratio=20, max_divergence=1.0))


class FakeClock:
    def __init__(self, now: datetime):
        self.at = now

    def now(self) -> datetime:
        return self.at

    def advance(self, by: timedelta) -> None:
        self.at += by


@pytest.fixture
def spec(tmp_path):
    return parse_spec(starter_spec()).model_copy(update={"platform": PlatformSpec(state_dir=str(tmp_path)),
                                                         "rollout": RULES})


@pytest.fixture
def world(spec, monkeypatch):
    """(the rollout, its clock, the fake control plane, a function that logs requests) for champion 2, challenger 3,
    the rollout started at T0 on the log's whole history."""
    from mlray.serve import control, deploy

    state = RolloutState(champion="2", challenger="3", step_started=T0.isoformat(), started=T0.isoformat(), log_version=-1,
                         labels_version=-1, rules=RULES.model_dump(mode="json"))
    plane = FakeControlPlane(state.model_dump(mode="json"))
    plane.plans, plane.promoted = [], []
    update = plane.update_rollout

    def update_rollout(expected, rollout, actor, plan=None, audit=(), promote=None, tag=None):
        plane.plans.append(plan)
        plane.promoted.append(promote)
        return update(expected, rollout, actor, plan, audit, promote, tag)

    plane.update_rollout = update_rollout
    monkeypatch.setattr(control, "client", lambda _spec, *args, **kwargs: plane)
    monkeypatch.setattr(deploy, "check_served", lambda *args: None)
    monkeypatch.setattr(Rollout, "_publish", lambda self: None)
    lake = Lake.from_platform(spec.platform)
    schema = inference_log_schema(spec.train_table, ["amount"])
    lake.create(spec.serve.inference_log_table, schema)
    lake.create(spec.serve.labels_table, LABELS_SCHEMA)
    clock = FakeClock(T0)
    sent = iter(range(1_000_000))

    def log(version: str, n: int, at: datetime, error_every: int = 0) -> None:
        rows = []
        for _ in range(n):
            i = next(sent)
            failed = bool(error_every) and i % error_every == 0
            rows.append({"request_id": f"r{i}", "row": 0, "at": at, "model_version": version, "pinned": False,
                         "shadow": False, "latency_ms": 5.0, "error": "boom" if failed else None,
                         "score": None if failed else 0.5, "prediction": None if failed else "false",
                         "inputs": {"amount": 1.0}})
        lake.append(spec.serve.inference_log_table, pa.Table.from_pylist(rows, schema=schema))

    return Rollout(spec, clock=clock), clock, plane, log


def test_a_step_passes_then_the_last_step_promotes_on_the_champions_earlier_traffic(world):
    rollout, clock, plane, log = world
    log("2", 10, T0 + timedelta(seconds=30))
    log("3", 10, T0 + timedelta(seconds=40))
    clock.advance(INTERVAL - timedelta(seconds=1))
    assert rollout.tick()["step"] == 0 and plane.audit == []  # the interval is not over: nothing analysed

    clock.advance(timedelta(seconds=2))
    state = rollout.tick()
    assert state["step"] == 1 and state["history"][-1]["verdict"] == "pass" and plane.audit == ["canary.step"]
    assert TrafficPlan.from_dict(plane.plans[-1]).weights == {"2": 0.0, "3": 1.0}

    # the 100% step: the champion gets no traffic; its requests from before the rollout's first step are the baseline
    log("3", 10, clock.now() + timedelta(seconds=10))
    clock.advance(INTERVAL + timedelta(seconds=1))
    state = rollout.tick()
    assert state["status"] == RolloutStatus.PROMOTED and state["history"][-1]["champion_requests"] == 10
    assert plane.promoted[-1] == "3" and plane.audit[-1] == "canary.promote"
    assert TrafficPlan.from_dict(plane.plans[-1]).weights == {"3": 1.0}


def test_too_few_requests_wait_and_the_step_goes_on(world):
    rollout, clock, plane, log = world
    log("2", 10, T0 + timedelta(seconds=30))
    log("3", 2, T0 + timedelta(seconds=40))  # min_requests is 5
    clock.advance(INTERVAL + timedelta(seconds=1))
    state = rollout.tick()
    assert state["step"] == 0 and state["failures"] == 0 and state["history"][-1]["verdict"] == "waiting"
    log("3", 5, clock.now())
    clock.advance(timedelta(seconds=5))
    state = rollout.tick()
    assert state["step"] == 1, state["history"]  # the same step, analysed again with the traffic that came meanwhile


def test_a_failing_step_is_retried_then_rolled_back_at_the_failure_limit(world):
    rollout, clock, plane, log = world
    log("2", 10, T0 + timedelta(seconds=30))
    log("3", 10, T0 + timedelta(seconds=40), error_every=2)  # half its requests fail
    clock.advance(INTERVAL + timedelta(seconds=1))
    state = rollout.tick()
    assert state["step"] == 0 and state["failures"] == 1 and plane.audit == ["canary.check_failed"]
    assert datetime.fromisoformat(state["step_started"]) == clock.now()  # retried on fresh traffic only

    clock.advance(INTERVAL + timedelta(seconds=1))
    state = rollout.tick()  # no fresh challenger traffic: waiting, not a second failure
    assert state["failures"] == 1 and state["history"][-1]["verdict"] == "waiting"

    log("2", 10, clock.now())
    log("3", 10, clock.now(), error_every=2)
    clock.advance(timedelta(seconds=1))
    state = rollout.tick()
    assert state["status"] == RolloutStatus.ROLLED_BACK and state["failures"] == 2
    assert "2 failed analyses; last: error_rate" in state["reason"]
    assert plane.audit[-2:] == ["canary.check_failed", "canary.rollback"]
    assert TrafficPlan.from_dict(plane.plans[-1]).weights == {"2": 1.0, "3": 0.0} and plane.promoted[-1] is None


def test_a_rollout_stopped_by_hand_is_left_alone_by_its_next_tick(world):
    rollout, clock, plane, log = world
    log("2", 10, T0 + timedelta(seconds=30))
    log("3", 10, T0 + timedelta(seconds=40))
    plane.stop_by_hand("traffic by user:ana: weights set by hand")
    clock.advance(INTERVAL + timedelta(seconds=1))
    state = rollout.tick()
    assert state["status"] == RolloutStatus.STOPPED and state["history"] == [] and plane.audit == []
