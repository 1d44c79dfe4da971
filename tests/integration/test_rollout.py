"""Progressive rollouts over real traffic: a good challenger is promoted, a bad one rolled back by itself
(once for each cause: errors, latency, live accuracy), and nothing fails while weights move or a replica dies."""

import json
import time
from collections import Counter
from dataclasses import replace

import mlflow
import pytest
import ray
from serving import SteadyLoad, as_json_rows, labels_of, post, raw_rows, register_copy, scraped_metrics, wait_until
from typer.testing import CliRunner

from mlray.audit import AuditLog
from mlray.cli import app
from mlray.registry.models import Registry
from mlray.rollout.controller import ROLLBACK_TAG
from mlray.rollout.controller import client as rollout_client
from mlray.runtime import NAMESPACE
from mlray.serve.deploy import deploy
from mlray.serve.model_server import Fault
from mlray.spec import RolloutChecks, RolloutSpec


def with_rollout(spec, checks=None, **rollout):
    """The spec with a quick rollout: 2 s steps, few requests; checks loose unless given (only noise differs)."""
    settings = {"steps": ["shadow", 50, 100], "interval": "2s", "min_requests": 5} | rollout
    checks = checks or RolloutChecks(max_p99_latency_ratio=20, max_divergence=1.0)
    return spec.model_copy(update={"rollout": RolloutSpec(**settings, checks=checks)})


def until_decided(spec, timeout=120, during=None):
    """Wait until the rollout is promoted or rolled back (polled every second), its final state; `during()`, when
    given, runs between polls instead (traffic, feedback)."""
    def decided():
        if rollout_client(spec).status()["status"] != "running":
            return True
        if during:
            during()
        return False

    assert wait_until(decided, timeout=timeout, every=0 if during else 1), \
        f"the rollout was not decided in {timeout} s: {rollout_client(spec).status()['history'][-2:]}"
    return rollout_client(spec).status()


def answered_after(load, since, n=5, version=None, timeout=60) -> bool:
    """Whether `load` sees the answers to `n` requests sent after `since` (from `version` when given) in time: the
    traffic after a change reached what the change left serving."""
    return bool(wait_until(lambda: sum(outcome == 200 and version in (None, answered)
                                       for outcome, answered in load.since(since)) >= n, timeout=timeout))


def rolled_back_for(spec, challenger, cause, state):
    """The rollout ended in an automatic rollback whose reason names `cause`; the champion still serves."""
    assert state["status"] == "rolled_back", state["history"][-2:]
    assert cause in state["reason"], state["reason"]
    registry = Registry(spec)
    assert registry.version_of("champion") == "1"
    assert cause in registry.client.get_model_version(spec.name, challenger).tags[ROLLBACK_TAG]
    entry = AuditLog(spec.platform).read(action="canary.rollback")[0]
    assert entry["component"].startswith("controller:") and entry["after"]["weights"][challenger] == 0.0


def test_a_good_challenger_is_promoted_step_by_step_under_load_without_a_failed_request(served):
    base, url, twin = served
    spec = with_rollout(base)
    registry = Registry(spec)
    with SteadyLoad(url, as_json_rows(raw_rows(spec, 1))[0]) as load:
        rollout_client(spec).start(twin, actor="user:test")
        state = until_decided(spec)
        decided_at = time.time()
        assert answered_after(load, decided_at), f"no request after the promotion answered: {load.since(decided_at)}"
    assert state["status"] == "promoted", state["history"][-2:]
    assert [h["verdict"] for h in state["history"]][-3:] == ["pass", "pass", "pass"]
    assert registry.version_of("champion") == twin and registry.version_of("previous") == "1"
    assert len(load.codes) > 20 and set(load.codes) == {200}, "no request failed while weights moved"
    actions = [e["action"] for e in AuditLog(spec.platform).read() if not e["action"].endswith(".requested")]
    assert actions[:4] == ["canary.promote", "canary.step", "canary.step", "canary.start"]
    text = scraped_metrics("ray_mlray_rollout_step{", "ray_mlray_rollout_challenger_weight{")
    gauges = {line.split("{")[0] for line in text.splitlines()
              if line.startswith("ray_mlray_rollout_") and f'challenger="{twin}"' in line and f'model="{spec.name}"' in line}
    assert {"ray_mlray_rollout_step", "ray_mlray_rollout_challenger_weight"} <= gauges, gauges

    runner = CliRunner()
    with SteadyLoad(url, load.row) as load:
        result = runner.invoke(app, ["rollback", "--spec", str(spec.path)])
        assert result.exit_code == 0, result.output
        rolled_back_at = time.time()
        assert answered_after(load, rolled_back_at, n=3, version="1"), \
            f"the load got no answers from version 1 after the rollback: {load.since(rolled_back_at)}"
    assert registry.version_of("champion") == "1" and registry.version_of("previous") == twin
    assert set(load.codes) == {200} and post(f"{url}/v1/predict", {"row": load.row}).json()["model_version"] == "1"
    audit = json.loads(runner.invoke(app, ["audit", "--spec", str(spec.path), "--json"]).stdout)
    assert audit[0]["action"] == "rollback" and audit[0]["after"]["champion"] == "1"


def test_a_rollout_stopped_by_hand_sends_all_traffic_back_and_tags_the_reason(served):
    spec, url, twin = served
    spec = with_rollout(spec, interval="1m")
    assert rollout_client(spec).start(twin, actor="user:test")["status"] == "running"
    state = rollout_client(spec).rollback("looks wrong", actor="user:test")
    assert state["status"] == "rolled_back"
    assert Registry(spec).client.get_model_version(spec.name, twin).tags[ROLLBACK_TAG] == "looks wrong"
    assert post(f"{url}/v1/predict", {"row": as_json_rows(raw_rows(spec, 1))[0]}).status_code == 200


def _roll_out_faulty(served, fault, pause, **rollout):
    """A copy of version 1 served with `fault`, rolled out under steady load until decided:
    (spec, its version, the final state, every status code the load saw)."""
    base, url, _ = served
    spec = with_rollout(base, **rollout)
    faulty = register_copy(spec)
    deploy(spec, versions=[faulty], fault=fault)
    with SteadyLoad(url, as_json_rows(raw_rows(spec, 1))[0], pause=pause) as load:
        rollout_client(spec).start(faulty, actor="user:test")
        state = until_decided(spec)
    return spec, faulty, state, load.codes


@pytest.mark.slow
def test_a_challenger_that_fails_is_rolled_back_after_the_failure_limit_and_no_caller_sees_it(served):
    """Shadow first: the challenger's errors are recorded and counted, but every caller gets the champion."""
    spec, failing, state, codes = _roll_out_faulty(served, Fault(error_rate=1.0), 0.02, steps=["shadow", 100],
                                                   failure_limit=2)
    rolled_back_for(spec, failing, "error_rate", state)
    assert [h["verdict"] for h in state["history"]].count("fail") == 2 and state["step"] == 0
    assert set(codes) == {200}


@pytest.mark.slow
def test_a_slow_challenger_is_rolled_back(served):
    spec, slow, state, codes = _roll_out_faulty(
        served, Fault(delay_ms=400), 0.05, steps=[50, 100], failure_limit=1,
        checks=RolloutChecks(max_p99_latency_ratio=2.0, max_divergence=1.0))
    rolled_back_for(spec, slow, "p99_latency_ratio", state)
    assert set(codes) == {200}  # slow is not failed


def _register_with_threshold(spec, threshold: float) -> str:
    """The champion's network and features with another decision threshold: the same scores, worse answers."""
    from mlray.registry.package import load_package, log_package

    registry = Registry(spec)
    package = load_package(f"models:/{spec.name}/1")
    with mlflow.start_run(experiment_id=registry.experiment_id, run_name="threshold-too-low"):
        info = log_package(package.net, replace(package.config, threshold=threshold), package.fitted,
                           spec.model_dump(mode="json"), raw_rows(spec, 50)[package.fitted.source_columns], spec.name)
    return str(info.registered_model_version)


@pytest.mark.slow
def test_a_less_accurate_challenger_is_rolled_back_on_labelled_feedback(served):
    """Its scores match the champion's (no divergence, same latency): only live accuracy on feedback tells."""
    base, url, _ = served
    checks = RolloutChecks(max_p99_latency_ratio=20, max_divergence=1.0, min_labels=30, require_labels=True)
    spec = with_rollout(base, steps=["shadow", 100], interval="3s", failure_limit=1, checks=checks)
    worse = _register_with_threshold(spec, 0.0)  # everything is 'fraud'
    rows, labels = as_json_rows(raw_rows(spec, 200)), labels_of(spec, 200)
    sent = iter(range(0, 10**6, 10))

    def labelled_traffic():
        start = next(sent) % len(rows)
        body = post(f"{url}/v1/predict", {"rows": rows[start:start + 10]}).json()
        for i, label in enumerate(labels[start:start + 10]):
            post(f"{url}/v1/feedback", {"request_id": body["request_id"], "row": i, "label": label})

    rollout_client(spec).start(worse, actor="user:test")
    state = until_decided(spec, during=labelled_traffic)
    rolled_back_for(spec, worse, "live_accuracy_drop", state)
    failed = {c["name"] for c in state["history"][-1]["checks"] if c["status"] == "fail"}
    assert "live_accuracy_drop" in failed and all(name.startswith("live_") for name in failed), failed


@pytest.mark.slow
def test_a_model_replica_that_dies_mid_request_is_replaced_without_a_failed_request(served):
    """Requests take 300 ms (injected), so the kill lands on one in flight: the ingress calls again and Serve
    routes it to the replacement replica."""
    from ray.util.state import list_actors

    from mlray.serve.pool import model_app_name

    spec, url, _ = served
    version = register_copy(spec)
    deploy(spec, versions=[version], fault=Fault(delay_ms=300))
    prefix = f"ServeReplica:{model_app_name(spec.name, version)}:"

    def replicas():
        return [a for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000)
                if a.class_name.startswith(prefix)]

    victim = replicas()[0]
    with SteadyLoad(url, as_json_rows(raw_rows(spec, 1))[0], **{"x-mlray-version": version}) as load:
        assert wait_until(lambda: len(load.codes) >= 3, timeout=60), f"the load was not flowing before the kill: {load.codes}"
        ray.kill(ray.get_actor(victim.name, namespace=victim.ray_namespace), no_restart=True)
        assert wait_until(lambda: any(a.actor_id != victim.actor_id for a in replicas()), timeout=60, every=1), \
            "Serve started a replacement"
        replaced_at = time.time()
        assert wait_until(lambda: len(load.since(replaced_at)) >= 6, timeout=90), \
            f"no traffic on the replacement: {load.since(replaced_at)}"
    assert any(a.actor_id != victim.actor_id for a in replicas()), "Serve started a replacement"
    assert len(load.codes) >= 3 and set(load.codes) == {200}, load.codes


@pytest.mark.slow
def test_the_rollout_controller_killed_mid_rollout_again_and_again_promotes_once_and_fails_no_request(served):
    """The controller killed (Ray restarts it) six times at random moments of a rollout under load, its ticks
    included: it keeps no state, so each restart goes on from the control plane's; every step passes once, the
    challenger is promoted once, and no request fails."""
    import random

    from mlray.rollout.controller import controller_name
    from mlray.serve import control
    from mlray.serve.deploy import rollback_to_previous

    base, url, _ = served
    spec = with_rollout(base)
    challenger = register_copy(spec)
    rng, kills = random.Random(18), 0
    with SteadyLoad(url, as_json_rows(raw_rows(spec, 1))[0]) as load:
        rollout_client(spec).start(challenger, actor="user:test")
        while kills < 6 and control.client(spec).snapshot()["rollout"]["status"] == "running":
            time.sleep(rng.uniform(0.3, 2.5))  # fault timing: each kill at a random moment of the rollout
            ray.kill(ray.get_actor(controller_name(spec.name), namespace=NAMESPACE), no_restart=False)
            kills += 1
        assert wait_until(lambda: control.client(spec).snapshot()["rollout"]["status"] != "running", timeout=120)
        decided_at = time.time()
        seen_after = answered_after(load, decided_at)  # asserted below, where the champion is put back whatever fails
    state = control.client(spec).snapshot()["rollout"]
    target = f"{spec.name} v{challenger}"
    audited = Counter(e["action"] for e in AuditLog(spec.platform).read() if e["target"] == target)
    print(f"\nrollout controller killed {kills} times mid-rollout under load: {state['status']}, "
          f"{len(state['history'])} analyses, audit {dict(audited)}, {sum(c != 200 for c in load.codes)} of "
          f"{len(load.codes)} requests failed")
    try:
        assert seen_after, f"no request after the rollout ended answered: {load.since(decided_at)}"
        assert state["status"] == "promoted" and Registry(spec).version_of("champion") == challenger
        assert Registry(spec).version_of("previous") == "1"
        assert [h["step"] for h in state["history"] if h["verdict"] == "pass"] == [0, 1, 2]
        assert audited["canary.promote"] == 1 and audited["canary.step"] == 2 and audited["canary.start"] == 1
        assert len(load.codes) > 20 and set(load.codes) == {200}
    finally:
        rollback_to_previous(spec, actor="user:test")  # version 1 is the champion again for the tests after
