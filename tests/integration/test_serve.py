"""Serving over real HTTP on 127.0.0.1: auth, limits, validation, routing between versions, shadow, logs."""

import re
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pyarrow as pa
import pytest
import requests
from serving import KEY, as_json_rows, labels_flushed, post, post_many, raw_rows, register_copy, scraped_metrics, wait_until

from mlray import dataplane
from mlray.registry.package import naive_utc
from mlray.serve.deploy import deploy, set_traffic, undeploy_version
from mlray.serve.request_ids import REQUEST_ID_PATTERN
from mlray.serve.routing import TrafficPlan


def test_predict_answers_like_the_registered_model_and_logs_every_row(served):
    spec, url, _ = served
    frame = raw_rows(spec)
    response = post(f"{url}/v1/predict", {"rows": as_json_rows(frame)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "1" and re.fullmatch(REQUEST_ID_PATTERN, body["request_id"]) and body["feature_version"]
    expected = mlflow.pyfunc.load_model(f"models:/{spec.name}/1").predict(naive_utc(frame))
    assert [p["score"] for p in body["predictions"]] == pytest.approx(expected["score"].tolist(), abs=1e-6)
    one = post(f"{url}/v1/predict", {"row": as_json_rows(frame)[0]}).json()
    assert one["predictions"][0]["score"] == pytest.approx(expected["score"][0], abs=1e-6)

    lake = dataplane.lake_of(spec)

    def logged():
        return lake.exists("inference_log") and [r for r in lake.read("inference_log").to_pylist()
                                                 if r["request_id"] == body["request_id"]]

    found = wait_until(logged, timeout=60)
    assert found, "the request's rows reached the inference log (flushed every 0.5 s here)"
    rows = sorted(found, key=lambda r: r["row"])
    assert [r["row"] for r in rows] == [0, 1, 2, 3, 4] and {r["model_version"] for r in rows} == {"1"}
    assert lake.read("inference_log").schema.field("inputs").type.field("amount").type == pa.float64()
    assert [r["inputs"]["amount"] for r in rows] == pytest.approx(frame["amount"].tolist())  # typed, not JSON text

    first = post(f"{url}/v1/feedback", {"request_id": body["request_id"], "label": True}).json()
    again = post(f"{url}/v1/feedback", {"request_id": body["request_id"], "label": True}).json()
    assert first["stored"] is True and again["stored"] is False  # idempotent on the request id

    def labelled():  # other modules' feedback shares this lake
        return [r for r in lake.read("labels").to_pylist() if r["request_id"] == body["request_id"]]

    assert wait_until(labelled), "the label was flushed (every 0.5 s here)"
    # one ingress replica here: once a label sent after the repeated one lands, the repeat would have landed with it
    assert labels_flushed(spec, url), "a label sent after the repeated one never landed"
    assert len(labelled()) == 1  # the repeated label never lands


def test_a_row_needs_only_the_model_inputs_and_an_id_given_is_echoed(served):
    spec, url, _ = served
    rows = as_json_rows(raw_rows(spec, 2))
    bare = [{k: v for k, v in row.items() if k not in ("transaction_id", "customer_id")} for row in rows]
    without = post(f"{url}/v1/predict", {"rows": bare})
    assert without.status_code == 200, without.text
    assert all("transaction_id" not in p for p in without.json()["predictions"])
    with_ids = post(f"{url}/v1/predict", {"rows": rows}).json()
    assert [p["transaction_id"] for p in with_ids["predictions"]] == [row["transaction_id"] for row in rows]
    assert [p["score"] for p in with_ids["predictions"]] == [p["score"] for p in without.json()["predictions"]]


def test_bad_requests_get_401_413_422_and_never_a_trace(served):
    spec, url, _ = served
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


def _versions_of(url, row, keys):
    """The version that answered each request: one request per key (None: no sticky header)."""
    answers = post_many(f"{url}/v1/predict", {"row": row}, [{"x-mlray-key": k} if k else {} for k in keys])
    return [body["model_version"] for _, body in answers]


@pytest.mark.slow
def test_a_10_percent_canary_gets_10_percent_of_5000_requests(served):
    spec, url, twin = served
    deploy(spec, versions=[twin])
    set_traffic(spec, TrafficPlan("1", {"1": 0.9, twin: 0.1}))
    try:
        versions = _versions_of(url, as_json_rows(raw_rows(spec, 1))[0], [None] * 5000)
    finally:
        set_traffic(spec, TrafficPlan.only("1"))
    assert abs(versions.count(twin) / len(versions) - 0.10) <= 0.02


def test_sticky_keys_pinning_and_shadow(served):
    spec, url, twin = served
    deploy(spec, versions=[twin])
    row = as_json_rows(raw_rows(spec, 1))[0]
    set_traffic(spec, TrafficPlan("1", {"1": 0.9, twin: 0.1}))
    keys = [f"user-{i}" for i in range(300)]
    sticky = _versions_of(url, row, keys)
    assert _versions_of(url, row, keys) == sticky  # the same key keeps its version while weights stay
    set_traffic(spec, TrafficPlan("1", {"1": 0.8, twin: 0.2}))
    moved = [k for k, before, after in zip(keys, sticky, _versions_of(url, row, keys)) if before != after]
    assert 0.05 <= len(moved) / len(keys) <= 0.15  # about 10% of keys move, all of them to the challenger
    assert all(sticky[keys.index(k)] == "1" for k in moved)
    assert post(f"{url}/v1/predict", {"row": row}, **{"x-mlray-version": twin}).json()["model_version"] == twin

    plain = post(f"{url}/v1/predict", {"row": row}, **{"x-mlray-version": "1"}).json()
    set_traffic(spec, TrafficPlan("1", {"1": 1.0, twin: 0.0}, shadow=twin, shadow_fraction=1.0))
    shadowed = post(f"{url}/v1/predict", {"row": row}).json()
    assert shadowed["model_version"] == "1"  # the shadow's answer is never returned
    assert shadowed["predictions"] == plain["predictions"]
    lake = dataplane.lake_of(spec)

    def both_recorded():
        found = [r for r in lake.read("inference_log").to_pylist() if r["request_id"] == shadowed["request_id"]]
        return {(r["model_version"], r["shadow"]) for r in found} == {("1", False), (twin, True)}

    assert wait_until(both_recorded), "the shadow call was recorded next to the served one"
    models = requests.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
    assert {v["version"] for v in models["versions"]} == {"1", twin} and models["rollout"]["shadow"] == twin
    set_traffic(spec, TrafficPlan.only("1"))


def test_prometheus_metrics_are_exported_by_model_version(served):
    """Ray's metrics agent exports mlray's serving metrics (Prometheus text), labelled by model version."""
    spec, url, _ = served
    row = as_json_rows(raw_rows(spec, 1))[0]
    for _ in range(5):
        assert post(f"{url}/v1/predict", {"row": row}).status_code == 200
    # recorded with the ingress's next flush, then exported by Ray's agent every few seconds
    text = scraped_metrics("ray_mlray_requests", 'outcome="ok"', "ray_mlray_request_latency_s_bucket",
                           "ray_mlray_traffic_weight", "ray_mlray_batch_rows_bucket", timeout=90)
    lines = [line for line in text.splitlines() if line.startswith("ray_mlray_requests")]
    assert any('model_version="1"' in line and 'outcome="ok"' in line for line in lines), lines[:5]
    assert "ray_mlray_traffic_weight" in text and "ray_mlray_batch_rows_bucket" in text


def test_keys_rotate_live_and_every_change_is_audited(served):
    from mlray.audit import AuditLog
    from mlray.serve.auth import KeyRing, fingerprint, hash_key
    from mlray.serve.deploy import change_keys

    spec, url, _ = served
    row = as_json_rows(raw_rows(spec, 1))[0]
    new_key = "rotated-key-456-0123456789abcdefghijklmn"

    def answers(key):
        return post(f"{url}/v1/predict", {"row": row}, key=key).status_code

    try:
        deploy(spec, keys=KeyRing([hash_key(new_key)], environ={}))  # a shell's key is added: no restart, both work
        assert answers(new_key) == 200 and answers(KEY) == 200  # pushed to the ingress before deploy returns
        change_keys(spec, [], [fingerprint(hash_key(KEY))])  # as `mlray keys revoke` does
        assert answers(KEY) == 401 and answers(new_key) == 200
        deploy(spec)  # no keys from this caller: the accepted ones stay
        assert answers(KEY) == 401 and answers(new_key) == 200
    finally:
        change_keys(spec, [hash_key(KEY)], [hash_key(new_key)])
    assert answers(KEY) == 200 and answers(new_key) == 401
    changes = AuditLog(spec.platform).read(action="keys.change")
    assert [c["reason"] for c in changes[:3]] == ["1 key(s) added, 1 revoked", "0 key(s) added, 1 revoked",
                                                  "1 key(s) added, 0 revoked"]
    text = str(dataplane.lake_of(spec).read("audit_log").to_pylist())
    assert KEY not in text and new_key not in text and hash_key(new_key) not in text  # fingerprints only


@pytest.mark.slow
def test_an_overloaded_version_answers_503_with_retry_after_and_no_request_fails_otherwise(served):
    """A version whose model is slow (injected delay) and whose queue is short sheds what it cannot take."""
    from mlray.serve.model_server import Fault

    spec, url, twin = served
    tight = spec.model_copy(update={"serve": spec.serve.model_copy(update={"max_queued_requests": 2})})
    slow = register_copy(spec)
    try:
        # 48 requests land within half a second: a queue of 2 behind 16 ongoing sheds the rest. The replica works
        # through what it holds a call at a time (18 × 0.6 s, well inside the client's 30 s timeout)
        deploy(tight, versions=[slow], fault=Fault(delay_ms=600), restart=True)  # the ingress cannot take a new queue
        row = as_json_rows(raw_rows(spec, 1))[0]
        with ThreadPoolExecutor(48) as pool:
            responses = list(pool.map(lambda _: post(f"{url}/v1/predict", {"row": row}, **{"x-mlray-version": slow}),
                                      range(48)))
    finally:
        undeploy_version(spec, slow)
        deploy(spec, restart=True)  # as the fixture deployed it
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 503} and codes.count(200) >= 2, codes
    shed = [r for r in responses if r.status_code == 503]
    assert all(r.headers.get("retry-after") == str(spec.serve.retry_after_s) for r in shed)
    assert all("Traceback" not in r.text for r in shed)


def test_a_champion_alias_moved_by_hand_takes_all_traffic_on_the_next_deploy(served):
    from mlray.serve import control

    spec, url, twin = served
    row = as_json_rows(raw_rows(spec, 1))[0]
    try:
        control.client(spec).set_alias("champion", twin, "user:test")
        assert deploy(spec).plan.weights == {twin: 1.0}
        assert wait_until(lambda: post(f"{url}/v1/predict", {"row": row}).json()["model_version"] == twin)
    finally:
        control.client(spec).set_alias("champion", "1", "user:test")
        deploy(spec)
    assert wait_until(lambda: post(f"{url}/v1/predict", {"row": row}).json()["model_version"] == "1")


def test_the_service_answers_through_haproxy_listening_on_loopback_only(served):
    """The Ray mlray starts serves through HAProxy (Serve's fast ingress); nothing of it listens beyond serve.host."""
    import psutil
    import ray

    spec, url, _ = served
    node = ray.get_runtime_context().get_node_id()
    proxies = [p for p in psutil.process_iter(["name", "cmdline"])
               if p.info["name"] == "haproxy" and any(node in arg for arg in p.info["cmdline"] or [])]
    assert proxies, "no HAProxy serves this Ray's Serve"
    listening = {(c.laddr.ip, c.laddr.port) for p in proxies for c in p.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert ("127.0.0.1", spec.serve.port) in listening
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
    assert post(f"{url}/v1/predict", {"row": as_json_rows(raw_rows(spec, 1))[0]}).status_code == 200


def test_a_deploy_switching_auth_applies_it_to_the_running_service_and_a_port_change_says_restart(served):
    from mlray.errors import UserError

    spec, url, _ = served
    row = as_json_rows(raw_rows(spec, 1))[0]
    opened = spec.model_copy(update={"serve": spec.serve.model_copy(update={"auth": False})})
    try:
        assert deploy(opened).settings == "auth True → False"  # pushed: every ingress replica applied it on return
        assert post(f"{url}/v1/predict", {"row": row}, key=None).status_code == 200
    finally:
        closed = deploy(spec)  # auth on again, with the key the control plane holds
    assert closed.settings == "auth False → True"
    assert post(f"{url}/v1/predict", {"row": row}, key=None).status_code == 401
    assert post(f"{url}/v1/predict", {"row": row}).status_code == 200
    moved = spec.model_copy(update={"serve": spec.serve.model_copy(update={"port": spec.serve.port + 1})})
    with pytest.raises(UserError, match=rf"restart needed: serve.port {spec.serve.port} → {spec.serve.port + 1}"):
        deploy(moved)
    assert post(f"{url}/v1/predict", {"row": row}).status_code == 200  # refused: nothing changed


def test_the_monitor_runs_on_the_spec_a_deploy_hands_over_after_a_restart_too(served):
    """A deploy with other monitor rules moves the running monitor to them, audited; Ray restarting the monitor with the
    spec it was created with keeps it on the one handed over since (the control plane's restart: a unit test)."""
    import ray

    from mlray import monitoring
    from mlray.audit import AuditLog
    from mlray.lake.specs import spec_digest
    from mlray.monitor import actor
    from mlray.serve import control

    spec, _, _ = served
    rules = spec.monitor.model_copy(update={"window_rows": spec.monitor.window_rows + 100})
    changed = spec.model_copy(update={"monitor": rules})
    handle = monitoring.start(spec)
    try:
        assert actor.status(spec)["spec"] == spec_digest(spec)
        deploy(changed)
        assert control.client(spec).snapshot()["spec"]["digest"] == spec_digest(changed)
        # moved once the push reaches it (at its next call), not at its next start
        assert wait_until(lambda: actor.status(spec)["spec"] == spec_digest(changed), timeout=30, every=0.5)
        ray.kill(handle, no_restart=False)  # Ray restarts it with the spec it was created with
        assert wait_until(lambda: actor.status(spec)["spec"] == spec_digest(changed), timeout=60, every=1)
        audit = [e["reason"] for e in AuditLog(spec.platform).read(action="spec.change")]
        assert audit[0] == "changed: monitor", audit
    finally:
        actor.stop(spec)
        deploy(spec)
