"""The control plane owns who serves what: it survives being killed, pushes changes to every ingress replica within a
second, keeps the keys the caller gave, and a change made by hand during a rollout is not undone by the rollout."""

import json
import time

import pytest
import ray
from serving import KEY, SteadyLoad, as_json_rows, post, post_many, raw_rows, register_copy, serving, wait_until

from mlray.registry.models import Registry
from mlray.rollout.controller import client as rollout_client
from mlray.runtime import NAMESPACE
from mlray.serve import control
from mlray.serve.auth import KeyRing, hash_key
from mlray.serve.deploy import deploy, rollback_to_previous, set_traffic
from mlray.serve.routing import TrafficPlan
from mlray.spec import RolloutChecks, RolloutSpec

ENV_KEY = "key-from-the-deploying-shell-0123456789"


@pytest.fixture(scope="module")
def two_ingress_replicas(small_model):
    spec = small_model[0]
    spec = spec.model_copy(update={"serve": spec.serve.model_copy(update={"ingress_replicas": 2})})
    yield from serving(spec)


def _answering(url, row, n=60) -> set[str]:
    return {body["model_version"] for _, body in post_many(f"{url}/v1/predict", {"row": row}, [{}] * n)}


def test_a_change_reaches_every_ingress_replica_within_a_second(two_ingress_replicas):
    spec, url, twin = two_ingress_replicas
    deploy(spec, versions=[twin])
    row = as_json_rows(raw_rows(spec, 1))[0]
    assert wait_until(lambda: len(control.client(spec).replica_revisions()) == 2), "both replicas follow the owner"
    delays = []
    for plan in (TrafficPlan(twin, {twin: 1.0, "1": 0.0}), TrafficPlan.only("1")):
        started = time.perf_counter()
        revision = control.client(spec).set_plan(plan.to_dict(), "user:test", "traffic", "push test")["revision"]
        assert wait_until(lambda: min(control.client(spec).replica_revisions().values()) >= revision, timeout=5,
                          every=0.005), "a replica never applied the change"
        delays.append(time.perf_counter() - started)
        assert _answering(url, row) == {plan.champion}  # every replica answers with the new plan
    print(f"plan change applied by both ingress replicas after {[f'{d * 1000:.1f} ms' for d in delays]}")
    assert max(delays) < 1.0, delays


def test_serve_status_tells_the_revision_each_ingress_replica_has_applied(two_ingress_replicas):
    from typer.testing import CliRunner

    from mlray.cli import app

    spec, _, _ = two_ingress_replicas
    result = CliRunner().invoke(app, ["serve", "status", "--spec", str(spec.path), "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["applications"][spec.name]["status"] == "RUNNING"
    assert len(status["replicas"]) == 2 and set(status["replicas"].values()) == {status["revision"]}
    assert status["plan"] == control.client(spec).snapshot()["plan"]


def test_keys_given_by_the_deploying_shell_survive_a_canary_started_elsewhere(two_ingress_replicas, monkeypatch):
    """The rollout never rebuilds keys: before, `canary start` re-deployed inside the controller actor, whose
    environment lacks the deploying shell's MLRAY_API_KEYS, and so revoked them."""
    spec, url, twin = two_ingress_replicas
    row = as_json_rows(raw_rows(spec, 1))[0]
    monkeypatch.setenv("MLRAY_API_KEYS", ENV_KEY)
    deploy(spec, keys=KeyRing.for_serving(spec.serve))
    monkeypatch.delenv("MLRAY_API_KEYS")
    assert post(f"{url}/v1/predict", {"row": row}, key=ENV_KEY).status_code == 200
    slow = spec.model_copy(update={"rollout": RolloutSpec(steps=[50, 100], interval="10m")})
    try:
        assert rollout_client(slow).start(twin, actor="user:test")["status"] == "running"
        assert post(f"{url}/v1/predict", {"row": row}, key=ENV_KEY).status_code == 200
        assert post(f"{url}/v1/predict", {"row": row}, key=KEY).status_code == 200
        assert sorted(control.client(spec).snapshot()["keys"]) == sorted([hash_key(KEY), hash_key(ENV_KEY)])
    finally:
        rollout_client(slow).rollback("test over", actor="user:test")
        deploy(spec, keys=KeyRing.for_serving(spec.serve))


def test_a_rollback_by_hand_during_a_rollout_is_not_undone_by_its_next_step(two_ingress_replicas):
    spec, url, twin = two_ingress_replicas
    registry = Registry(spec)
    other = register_copy(spec)
    control.client(spec).set_alias("champion", other, "user:test")  # champion other, previous 1
    deploy(spec)
    quick = spec.model_copy(update={"rollout": RolloutSpec(
        steps=[50, 100], interval="2s", min_requests=1, checks=RolloutChecks(max_p99_latency_ratio=50,
                                                                             max_divergence=1.0))})
    row = as_json_rows(raw_rows(spec, 1))[0]
    rollout_client(quick).start(twin, actor="user:test")
    rollback_to_previous(spec, "user:test")  # what `mlray rollback` does
    for _ in range(8):  # four intervals of traffic: a live controller would have stepped or promoted by now
        post_many(f"{url}/v1/predict", {"row": row}, [{}] * 10)
        time.sleep(1)  # load pacing: traffic spread over the intervals a live controller would analyse
    state = rollout_client(quick).status()
    assert state["status"] == "stopped" and "rolled back" in state["reason"], state
    assert registry.version_of("champion") == "1" and registry.version_of("previous") == other
    assert control.client(spec).snapshot()["plan"]["weights"] == {"1": 1.0}
    assert _answering(url, row) == {"1"}
    revision = control.client(spec).snapshot()["revision"]
    control.client(spec).rollback_to("1", "user:test")  # the same call again, as `control.call` retries one whose owner died
    assert registry.version_of("champion") == "1" and registry.version_of("previous") == other  # not swapped back
    assert control.client(spec).snapshot()["revision"] == revision


def test_the_owner_comes_back_with_the_same_state_after_it_is_killed(two_ingress_replicas):
    spec, url, twin = two_ingress_replicas
    row = as_json_rows(raw_rows(spec, 1))[0]
    set_traffic(spec, TrafficPlan("1", {"1": 0.5, twin: 0.5}))
    before = control.client(spec).snapshot()
    name = control.actor_name(spec)

    with SteadyLoad(url, row) as load:  # serving goes on with the last plan while its owner is away
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=False)  # a crash: Ray restarts it
        assert wait_until(lambda: _snapshot_or_none(spec) == before, timeout=30)
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)  # gone for good: found again
        assert control.client(spec).snapshot() == before  # read back from the lake by a new actor
    print(f"\ncontrol plane killed twice under load: {sum(c != 200 for c in load.codes)} of {len(load.codes)} "
          f"requests failed")
    assert load.codes and set(load.codes) == {200}

    set_traffic(spec, TrafficPlan.only("1"))  # the ingress replicas follow the new owner
    assert _answering(url, row) == {"1"}
    assert len(control.client(spec).replica_revisions()) == 2


def _snapshot_or_none(spec):
    try:
        return control.client(spec, attempts=1).snapshot()
    except ray.exceptions.RayActorError:
        return None
