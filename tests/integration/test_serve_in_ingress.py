"""`serve.model_placement: ingress`: the model versions load inside the ingress replicas (one hop less);
answers, routing, shadow and a rollout under load behave as with one deployment per version."""

import time

import mlflow
import pytest
import requests
from serving import KEY, SteadyLoad, as_json_rows, post, post_many, raw_rows, serving, wait_until

from mlray.registry.models import Registry
from mlray.registry.package import naive_utc
from mlray.rollout.controller import client as rollout_client
from mlray.serve.deploy import running_apps, set_traffic
from mlray.serve.routing import TrafficPlan
from mlray.spec import RolloutChecks, RolloutSpec


@pytest.fixture(scope="module")
def served_in_ingress(small_model):
    spec = small_model[0]
    spec = spec.model_copy(update={"serve": spec.serve.model_copy(update={"model_placement": "ingress"})})
    yield from serving(spec)


def test_the_ingress_scores_itself_like_the_registered_model(served_in_ingress):
    spec, url, _ = served_in_ingress
    assert [name for name in running_apps() if name.startswith(spec.name)] == [spec.name]  # no model apps
    frame = raw_rows(spec)
    body = post(f"{url}/v1/predict", {"rows": as_json_rows(frame)}).json()
    expected = mlflow.pyfunc.load_model(f"models:/{spec.name}/1").predict(naive_utc(frame))
    assert body["model_version"] == "1"
    assert [p["score"] for p in body["predictions"]] == pytest.approx(expected["score"].tolist(), abs=1e-6)


def test_weights_pinning_and_shadow_with_versions_loaded_in_the_ingress(served_in_ingress):
    spec, url, twin = served_in_ingress
    row = as_json_rows(raw_rows(spec, 1))[0]
    set_traffic(spec, TrafficPlan("1", {"1": 0.5, twin: 0.5}, shadow=twin, shadow_fraction=1.0))
    versions = wait_until(lambda: {b["model_version"] for _, b in post_many(f"{url}/v1/predict", {"row": row},
                                                                           [{}] * 100)} == {"1", twin})
    assert versions, "both versions answer once the ingress has loaded the new one"
    assert post(f"{url}/v1/predict", {"row": row}, **{"x-mlray-version": twin}).json()["model_version"] == twin
    models = requests.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
    assert {v["version"] for v in models["versions"]} == {"1", twin}
    assert all(v["feature_version"] for v in models["versions"])
    set_traffic(spec, TrafficPlan.only("1"))


def test_a_rollout_promotes_with_versions_loaded_in_the_ingress_without_a_failed_request(served_in_ingress):
    base, url, twin = served_in_ingress
    spec = base.model_copy(update={"rollout": RolloutSpec(
        steps=["shadow", 50, 100], interval="2s", min_requests=5,
        checks=RolloutChecks(max_p99_latency_ratio=20, max_divergence=1.0))})
    with SteadyLoad(url, as_json_rows(raw_rows(spec, 1))[0]) as load:
        rollout_client(spec).start(twin, actor="user:test")
        assert wait_until(lambda: rollout_client(spec).status()["status"] != "running", timeout=120, every=1), \
            f"the rollout was not decided in 120 s: {rollout_client(spec).status()['history'][-2:]}"
        decided_at = time.time()
        assert wait_until(lambda: sum(code == 200 for code, _ in load.since(decided_at)) >= 5, timeout=60), \
            f"no request after the promotion answered: {load.since(decided_at)}"
    state = rollout_client(spec).status()
    assert state["status"] == "promoted", state["history"][-2:]
    assert Registry(spec).version_of("champion") == twin
    assert len(load.codes) > 20 and set(load.codes) == {200}
