"""`Rollout.tick` driven tick by tick without Ray: a fake clock, a fake control plane holding the rollout's state (as
`mlray.serve.control` would), and real inference-log and label tables on a local lake, written as the ingress writes
them. Every tick looks at the traffic since the rollout began; a step moves on only once its interval is over.

| transition | test |
|---|---|
| a look before the step's interval is over saves nothing | test_a_step_passes_then_the_last_step_promotes_... |
| step passes → next step, its plan | test_a_step_passes_then_the_last_step_promotes_... |
| 100% step: the champion's traffic of the earlier steps is the baseline | test_a_step_passes_then_the_last_step_promotes_... |
| a rollout that starts at 100%: the champion's traffic before it is the baseline | test_a_rollout_that_starts_at_100_... |
| last step passes → promoted, the alias moves | test_a_step_passes_then_the_last_step_promotes_... |
| too few requests → waiting, the step goes on; the history keeps the latest look | test_too_few_requests_wait_and_... |
| an undecided check does not hold a step; `force` ends the step at once | test_an_undecided_check_does_not_hold_... |
| always-valid evidence of harm → a failure at once, between interval ends; the same counts are not counted twice; \
rolled back at failure_limit | test_evidence_of_harm_counts_at_once_... |
| a plain threshold (divergence) counts only at the interval's end | test_a_plain_threshold_counts_only_... |
| a change by hand (weights, rollback, alias) stops the rollout | test_a_rollout_stopped_by_hand_is_left_alone_... |
| divergence weighed with the incident in a real tick | tests/unit/test_rollout_incident.py |
| crash between the state commit and the alias move | tests/unit/test_control_plane_transitions.py |
| incident closed by the rollout's outcome | tests/unit/test_rollout_incident.py |
| 200 simulated rollouts through the same decisions: false rollbacks, power | tests/unit/test_rollout_sequential.py |
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

    def log(version: str, n: int, at: datetime, error_every: int = 0, score=lambda i: 0.5) -> None:
        rows = []
        for _ in range(n):
            i = next(sent)
            failed = bool(error_every) and i % error_every == 0
            rows.append({"request_id": f"r{i}", "row": 0, "at": at, "model_version": version, "pinned": False,
                         "shadow": False, "latency_ms": 5.0, "error": "boom" if failed else None,
                         "score": None if failed else score(i),
                         "prediction": None if failed else "false", "inputs": {"amount": 1.0}})
        lake.append(spec.serve.inference_log_table, pa.Table.from_pylist(rows, schema=schema))

    return Rollout(spec, clock=clock), clock, plane, log


def test_a_step_passes_then_the_last_step_promotes_on_the_champions_earlier_traffic(world):
    rollout, clock, plane, log = world
    log("2", 100, T0 + timedelta(seconds=30))  # a p99 needs 100 champion answers
    log("3", 10, T0 + timedelta(seconds=40))
    clock.advance(INTERVAL - timedelta(seconds=1))
    state = rollout.tick()  # looked at, nothing failed, but the interval is not over: nothing saved
    assert state["step"] == 0 and state["history"] == [] and plane.audit == []

    clock.advance(timedelta(seconds=2))
    state = rollout.tick()
    assert state["step"] == 1 and plane.audit == ["canary.step"]
    assert [(h["decision"], h["verdict"]) for h in state["history"]] == [("advance", "pass")]
    assert TrafficPlan.from_dict(plane.plans[-1]).weights == {"2": 0.0, "3": 1.0}

    # the 100% step: the champion gets no traffic; its requests since the rollout began are the baseline
    log("3", 10, clock.now() + timedelta(seconds=10))
    clock.advance(INTERVAL + timedelta(seconds=1))
    state = rollout.tick()
    assert state["status"] == RolloutStatus.PROMOTED
    assert state["history"][-1]["champion_requests"] == 100 and state["history"][-1]["challenger_requests"] == 20
    assert plane.promoted[-1] == "3" and plane.audit[-1] == "canary.promote"
    assert TrafficPlan.from_dict(plane.plans[-1]).weights == {"3": 1.0}


def test_a_rollout_that_starts_at_100_percent_compares_with_the_champions_traffic_before_it(world):
    rollout, clock, plane, log = world
    plane.rollout = plane.rollout | {"rules": RULES.model_copy(update={"steps": [100.0]}).model_dump(mode="json")}
    log("2", 100, T0 - timedelta(seconds=30))  # before the rollout, within an interval of its start
    log("3", 10, T0 + timedelta(seconds=40))
    clock.advance(INTERVAL + timedelta(seconds=1))
    state = rollout.tick()
    assert state["status"] == RolloutStatus.PROMOTED and state["history"][-1]["champion_requests"] == 100


def test_too_few_requests_wait_and_the_step_goes_on(world):
    rollout, clock, plane, log = world
    log("2", 100, T0 + timedelta(seconds=30))
    log("3", 2, T0 + timedelta(seconds=40))  # min_requests is 5
    clock.advance(INTERVAL + timedelta(seconds=1))
    state = rollout.tick()
    assert state["step"] == 0 and state["failures"] == 0
    assert [(h["decision"], h["verdict"]) for h in state["history"]] == [("look", "waiting")]
    assert "need 5 challenger requests" in state["history"][-1]["checks"][0]["detail"]
    clock.advance(timedelta(seconds=5))
    state = rollout.tick()
    assert len(state["history"]) == 1, "a look replaces the look before it"
    log("3", 5, clock.now())
    clock.advance(timedelta(seconds=5))
    state = rollout.tick()
    assert state["step"] == 1, state["history"]  # the same step, looked at again with the traffic that came meanwhile
    assert [h["decision"] for h in state["history"]] == ["advance"] and state["history"][0]["challenger_requests"] == 7


def test_an_undecided_check_does_not_hold_the_step_and_force_ends_it_at_once(world):
    """Ten answered requests against a hundred cannot tell a 5-point tolerance yet: the error rate is undecided, the
    step moves on (the guarantee is against false rollbacks; the counts keep cumulating through the next step)."""
    rollout, clock, plane, log = world
    log("2", 100, T0 + timedelta(seconds=30))
    log("3", 10, T0 + timedelta(seconds=40))
    state = rollout.tick(force=True)  # the interval is not over: `force` ends the step now
    assert state["step"] == 1 and plane.audit == ["canary.step"]
    checks = {c["name"]: c for c in state["history"][-1]["checks"]}
    assert checks["error_rate"]["status"] == "undecided" and checks["error_rate"]["always_valid"]
    assert checks["error_rate"]["detail"].startswith("errors 0/10 vs champion 0/100; Δ in [")
    assert plane.reasons[-1] == "step 2/2: 100.0; undecided: error_rate"


def test_evidence_of_harm_counts_at_once_but_the_same_counts_only_once_then_rolls_back(world):
    rollout, clock, plane, log = world
    log("2", 100, T0 + timedelta(seconds=30))
    log("3", 10, T0 + timedelta(seconds=40), error_every=2)  # half its requests fail
    clock.advance(timedelta(seconds=45))  # long before the interval's end
    state = rollout.tick()
    assert state["step"] == 0 and state["failures"] == 1 and plane.audit == ["canary.check_failed"]
    assert datetime.fromisoformat(state["step_started"]) == clock.now()  # the step's interval starts again
    assert plane.reasons[-1].startswith("step 1, 10 challenger requests: error_rate: errors 5/10 vs champion 0/100; "
                                        "Δ in [") and plane.reasons[-1].endswith("worse than the champion (failure 1/2)")

    clock.advance(INTERVAL + timedelta(seconds=1))
    state = rollout.tick()  # no new traffic: the same evidence, not a second failure
    assert state["failures"] == 1 and state["history"][-1]["decision"] == "look"
    assert state["history"][-1]["verdict"] == "fail"

    log("2", 10, clock.now())
    log("3", 10, clock.now(), error_every=2)
    clock.advance(timedelta(seconds=1))
    state = rollout.tick()
    assert state["status"] == RolloutStatus.ROLLED_BACK and state["failures"] == 2
    assert state["reason"].startswith("2 failed analyses; last: error_rate: errors 10/20 vs champion 0/110")
    assert [(h["decision"], h["failures"]) for h in state["history"]] == [("failure", 1), ("failure", 2)]
    assert plane.audit[-2:] == ["canary.check_failed", "canary.rollback"]
    assert TrafficPlan.from_dict(plane.plans[-1]).weights == {"2": 1.0, "3": 0.0} and plane.promoted[-1] is None


def test_a_plain_threshold_counts_only_at_the_intervals_end(world):
    """Divergence is no sequential test: repeated looks would trip it by chance, so it is acted upon once a step."""
    rollout, clock, plane, log = world
    log("2", 100, T0 + timedelta(seconds=30), score=lambda i: (i % 10) / 10)
    log("3", 10, T0 + timedelta(seconds=40), score=lambda i: 0.95)  # unlike the champion's; no incident, no labels
    clock.advance(timedelta(seconds=45))
    state = rollout.tick()
    assert state["failures"] == 0 and state["history"] == [] and plane.audit == []
    clock.advance(INTERVAL)
    state = rollout.tick()
    assert state["failures"] == 1 and plane.audit == ["canary.check_failed"]
    assert plane.reasons[-1].startswith("step 1, 10 challenger requests: score_divergence ")
    assert "(no incident behind the challenger, and no labels yet) (failure 1/2)" in plane.reasons[-1]
    clock.advance(INTERVAL)
    assert rollout.tick()["failures"] == 1  # its interval is over again, but on the same traffic: the same evidence


def test_a_rollout_stopped_by_hand_is_left_alone_by_its_next_tick(world):
    rollout, clock, plane, log = world
    log("2", 10, T0 + timedelta(seconds=30))
    log("3", 10, T0 + timedelta(seconds=40))
    plane.stop_by_hand("traffic by user:ana: weights set by hand")
    clock.advance(INTERVAL + timedelta(seconds=1))
    state = rollout.tick()
    assert state["status"] == RolloutStatus.STOPPED and state["history"] == [] and plane.audit == []


def test_the_monitors_estimates_since_the_rollout_began_explain_a_divergence_before_labels(world, spec):
    from mlray.control.state import WindowReport, WindowVerdict
    from mlray.window_reports import write_report

    rollout, clock, plane, log = world
    log("2", 100, T0 + timedelta(seconds=30), score=lambda i: (i % 10) / 10)
    log("3", 10, T0 + timedelta(seconds=40), score=lambda i: 0.95)

    def estimated(auc: float) -> dict:
        return {"roc_auc": {"value": auc, "low": auc - 0.02, "high": auc + 0.02}}

    def report(seq: int, at: datetime, champion_auc: float, challenger_auc: float) -> None:
        write_report(Lake.from_platform(spec.platform), WindowReport(
            seq=seq, epoch="e", at=at, rows=110, champion="2", start=[0, 0], end=[1, 0], verdict=WindowVerdict.OK,
            estimated=estimated(champion_auc), versions={"3": {"rows": 10, "shadow": False,
                                                                "estimated": estimated(challenger_auc)}}))

    report(0, T0 - timedelta(minutes=5), 0.80, 0.95)  # before the rollout began: not this rollout's evidence
    report(1, T0 + timedelta(seconds=50), 0.86, 0.90)
    clock.advance(INTERVAL + timedelta(seconds=1))
    state = rollout.tick()
    assert state["step"] == 1 and state["failures"] == 0
    divergence = next(c for c in state["history"][-1]["checks"] if c["name"] == "score_divergence")
    assert divergence["status"] == "noted" and divergence["decided_by"] == "estimates"
    assert divergence["detail"] == "estimated roc_auc 0.900 >= champion 0.860"
