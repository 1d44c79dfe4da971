"""Serving over real HTTP on 127.0.0.1: auth, limits, validation, routing between versions, shadow, logs."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pytest
import requests
from projects import SERVE_KEY
from typer.testing import CliRunner

from mlray import dataplane
from mlray.cli import app
from mlray.registry.models import Registry
from mlray.registry.package import naive_utc
from mlray.serve.deploy import deploy, set_traffic
from mlray.serve.routing import TrafficPlan

KEY = SERVE_KEY


@pytest.fixture(scope="module")
def served(small_model):
    """The run's small model as the champion (version 1), the same package registered again as version 2,
    and the champion deployed behind the ingress."""
    import ray
    from ray import serve

    from mlray.serve.traffic import NAMESPACE, actor_name

    spec, outcome = small_model
    mlflow.register_model(f"runs:/{outcome.run_id}/model", spec.name)  # version 2: the same package
    try:
        yield spec, deploy(spec).url
    finally:
        for name in (actor_name(spec.name), f"{spec.name}-rollout-controller"):
            try:
                ray.kill(ray.get_actor(name, namespace=NAMESPACE))
            except ValueError:  # never started
                pass
        serve.shutdown()


def post(url, body, key=KEY, **headers):
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return requests.post(url, data=json.dumps(body), headers={"content-type": "application/json", **headers}, timeout=30)


def raw_rows(spec, n=5):
    table = dataplane.lake_of(spec).read("transactions").slice(0, n)
    label = spec.data.label_column
    return table.drop_columns([label]).to_pandas()


def as_json_rows(frame):
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def test_predict_answers_like_the_registered_model_and_logs_every_row(served):
    spec, url = served
    frame = raw_rows(spec)
    response = post(f"{url}/v1/predict", {"rows": as_json_rows(frame)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "1" and len(body["request_id"]) == 32 and body["feature_version"]
    expected = mlflow.pyfunc.load_model(f"models:/{spec.name}/1").predict(naive_utc(frame))
    assert [p["score"] for p in body["predictions"]] == pytest.approx(expected["score"].tolist(), abs=1e-6)
    one = post(f"{url}/v1/predict", {"row": as_json_rows(frame)[0]}).json()
    assert one["predictions"][0]["score"] == pytest.approx(expected["score"][0], abs=1e-6)

    lake = dataplane.lake_of(spec)
    deadline = time.time() + 20
    while time.time() < deadline:
        if lake.exists("inference_log"):
            logged = lake.read("inference_log").to_pylist()
            if any(r["request_id"] == body["request_id"] for r in logged):
                break
        time.sleep(0.5)
    rows = [r for r in logged if r["request_id"] == body["request_id"]]
    assert sorted(r["row"] for r in rows) == [0, 1, 2, 3, 4] and {r["model_version"] for r in rows} == {"1"}

    first = post(f"{url}/v1/feedback", {"request_id": body["request_id"], "label": True}).json()
    again = post(f"{url}/v1/feedback", {"request_id": body["request_id"], "label": True}).json()
    assert first["stored"] is True and again["stored"] is False  # idempotent on the request id
    assert lake.read("labels").num_rows == 1


def test_bad_requests_get_401_413_422_and_never_a_trace(served):
    spec, url = served
    row = as_json_rows(raw_rows(spec, 1))[0]
    assert post(f"{url}/v1/predict", {"row": row}, key=None).status_code == 401
    assert post(f"{url}/v1/predict", {"row": row}, key="wrong").status_code == 401
    assert requests.get(f"{url}/v1/health", timeout=10).json()["status"] == "ok"  # health needs no key
    huge = post(f"{url}/v1/predict", {"rows": [row] * 20000})
    assert huge.status_code == 413
    wrong_type = post(f"{url}/v1/predict", {"row": row | {"amount": "a lot"}})
    unknown = post(f"{url}/v1/predict", {"row": row | {"amuont": 3.0}})
    assert wrong_type.status_code == 422 and "amount" in wrong_type.text
    assert unknown.status_code == 422 and "amuont" in unknown.text
    pinned = post(f"{url}/v1/predict", {"row": row}, **{"x-mlray-version": "7"})
    assert pinned.status_code == 400 and "not served" in pinned.text
    for response in (huge, wrong_type, unknown, pinned):
        assert "Traceback" not in response.text and KEY not in response.text


def test_weights_stickiness_pinning_and_shadow(served):
    spec, url = served
    deploy(spec, versions=["2"])
    row = as_json_rows(raw_rows(spec, 1))[0]
    set_traffic(spec, TrafficPlan("1", {"1": 0.9, "2": 0.1}))
    time.sleep(1.5)  # ingress replicas poll the traffic table
    with ThreadPoolExecutor(16) as pool:
        versions = list(pool.map(lambda _: post(f"{url}/v1/predict", {"row": row}).json()["model_version"],
                                 range(2000)))
    assert abs(versions.count("2") / len(versions) - 0.10) <= 0.02

    sticky = {f"user-{i}": post(f"{url}/v1/predict", {"row": row}, **{"x-mlray-key": f"user-{i}"}).json()["model_version"]
              for i in range(60)}
    again = {k: post(f"{url}/v1/predict", {"row": row}, **{"x-mlray-key": k}).json()["model_version"] for k in sticky}
    assert again == sticky
    assert post(f"{url}/v1/predict", {"row": row}, **{"x-mlray-version": "2"}).json()["model_version"] == "2"

    set_traffic(spec, TrafficPlan("1", {"1": 1.0, "2": 0.0}, shadow="2", shadow_fraction=1.0))
    time.sleep(1.5)
    shadowed = post(f"{url}/v1/predict", {"row": row}).json()
    assert shadowed["model_version"] == "1"  # the shadow's answer is never returned
    lake = dataplane.lake_of(spec)
    deadline = time.time() + 20
    found = []
    while time.time() < deadline and not found:
        time.sleep(0.5)
        found = [r for r in lake.read("inference_log").to_pylist() if r["request_id"] == shadowed["request_id"]]
        found = found if {(r["model_version"], r["shadow"]) for r in found} == {("1", False), ("2", True)} else []
    assert found, "the shadow call was recorded next to the served one"

    models = requests.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
    assert {v["version"] for v in models["versions"]} == {"1", "2"} and models["rollout"]["shadow"] == "2"


class SteadyLoad:
    """Requests in a background thread, one after another, every status code kept (zero-downtime checks)."""

    def __init__(self, url, row):
        self.url, self.row, self.codes, self.stop = url, row, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            try:
                self.codes.append(post(f"{self.url}/v1/predict", {"row": self.row}).status_code)
            except requests.RequestException as exc:
                self.codes.append(type(exc).__name__)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_a_good_challenger_is_promoted_step_by_step_under_load_without_a_failed_request(served):
    from mlray.audit import AuditLog
    from mlray.rollout.controller import command
    from mlray.spec import RolloutChecks, RolloutSpec

    spec, url = served
    spec = spec.model_copy(update={"rollout": RolloutSpec(
        steps=["shadow", 50, 100], interval="2s", min_requests=5,
        checks=RolloutChecks(max_p99_latency_ratio=20, max_divergence=1.0))})  # the same package: only noise differs
    registry = Registry(spec)
    assert registry.version_of("champion") == "1"
    with SteadyLoad(url, as_json_rows(raw_rows(spec, 1))[0]) as load:
        state = command(spec, "start", "2", actor="user:test")
        deadline = time.time() + 120
        while state["status"] == "running" and time.time() < deadline:
            time.sleep(1)
            state = command(spec, "status")
        time.sleep(1.5)  # requests after the promotion reach the new champion
    assert state["status"] == "promoted", state["history"][-2:]
    assert [h["verdict"] for h in state["history"]][-3:] == ["pass", "pass", "pass"]
    assert registry.version_of("champion") == "2" and registry.version_of("previous") == "1"
    assert len(load.codes) > 20 and set(load.codes) == {200}, "no request failed while weights moved"
    actions = [e["action"] for e in AuditLog(spec.platform.state_dir).read() if not e["action"].endswith(".requested")]
    assert actions[:4] == ["canary.promote", "canary.step", "canary.step", "canary.start"]

    runner = CliRunner()
    with SteadyLoad(url, as_json_rows(raw_rows(spec, 1))[0]) as load:
        result = runner.invoke(app, ["rollback", "--spec", str(spec.path)])
        assert result.exit_code == 0, result.output
        time.sleep(1.5)
    assert registry.version_of("champion") == "1" and registry.version_of("previous") == "2"
    assert set(load.codes) == {200} and post(f"{url}/v1/predict", {"row": load.row}).json()["model_version"] == "1"
    audit = json.loads(runner.invoke(app, ["audit", "--spec", str(spec.path), "--json"]).stdout)
    assert audit[0]["action"] == "rollback" and audit[0]["after"]["champion"] == "1"

    # a rollout stopped by hand: all traffic back to the champion, the challenger tagged with the reason
    state = command(spec, "start", "2", actor="user:test")
    assert state["status"] == "running"
    state = command(spec, "rollback", "looks wrong", actor="user:test")
    assert state["status"] == "rolled_back"
    assert registry.client.get_model_version(spec.name, "2").tags["mlray.rolled_back"] == "looks wrong"
    deadline, weights = time.time() + 10, None
    while time.time() < deadline and weights != {"1": 1.0, "2": 0.0}:  # ingress replicas poll the traffic table
        time.sleep(0.5)
        weights = requests.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"},
                               timeout=10).json()["rollout"]["weights"]
    assert weights == {"1": 1.0, "2": 0.0}


def test_prometheus_metrics_are_exported_by_model_version(served):
    """Ray's metrics agent exports mlray's serving metrics (Prometheus text), labelled by model version."""
    import ray

    spec, url = served
    row = as_json_rows(raw_rows(spec, 1))[0]
    for _ in range(5):
        assert post(f"{url}/v1/predict", {"row": row}).status_code == 200
    port = ray._private.worker.global_worker.node.metrics_export_port
    deadline, text = time.time() + 60, ""
    while time.time() < deadline:  # the agent exports every few seconds
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if "ray_mlray_requests" in text and "ray_mlray_request_latency_s_bucket" in text:
            break
        time.sleep(2)
    lines = [line for line in text.splitlines() if line.startswith("ray_mlray_requests")]
    assert any('model_version="1"' in line and 'outcome="ok"' in line for line in lines), lines[:5]
    assert "ray_mlray_traffic_weight" in text and "ray_mlray_batch_rows_bucket" in text
