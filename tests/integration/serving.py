"""Helpers for the tests that talk to the service over real HTTP on 127.0.0.1."""

import json
import time
from collections import Counter

import mlflow
import requests
from helpers import Background, wait_until  # noqa: F401 - wait_until: the serving tests take it from here
from projects import SERVE_KEY

from mlray import dataplane

KEY = SERVE_KEY


def serving(spec):
    """Deploy `spec`'s champion (version 1) with all traffic, yield (spec, url, a copy of version 1), stop it all."""
    import ray
    from ray import serve

    from mlray.runtime import NAMESPACE
    from mlray.serve import control
    from mlray.serve.auth import KeyRing
    from mlray.serve.control import actor_name
    from mlray.serve.deploy import deploy
    from mlray.serve.routing import TrafficPlan

    control.client(spec).set_alias("champion", "1", "user:test")  # whatever a module before left behind
    twin = register_copy(spec)
    try:
        yield spec, deploy(spec, plan=TrafficPlan.only("1"), keys=KeyRing.for_serving(spec.serve)).url, twin
    finally:
        serve.shutdown()  # first: a live ingress would start its project's control plane again
        for name in (actor_name(spec), f"{spec.name}-rollout-controller"):
            try:
                ray.kill(ray.get_actor(name, namespace=NAMESPACE))
            except ValueError:  # never started
                pass


def register_copy(spec, version="1") -> str:
    """Register the package of `version` once more; the new version's number."""
    from mlray.registry.models import Registry

    source = Registry(spec).client.get_model_version(spec.name, version).source
    return str(mlflow.register_model(source, spec.name).version)


def post(url, body, key=KEY, **headers):
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return requests.post(url, data=json.dumps(body), headers={"content-type": "application/json", **headers}, timeout=30)


def post_many(url, body, headers_per_request, concurrency=16, key=KEY) -> list[tuple[int, dict]]:
    """POST `body` once per entry of `headers_per_request`, `concurrency` at a time over kept-alive connections
    (aiohttp: a thread pool of `requests` spends more CPU than the server here); (status, JSON) in order."""
    import asyncio

    import aiohttp

    async def run():
        gate = asyncio.Semaphore(concurrency)
        base = {"content-type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            async def one(headers):
                async with gate, session.post(url, data=json.dumps(body), headers=base | headers) as response:
                    return response.status, await response.json()

            return await asyncio.gather(*(one(h) for h in headers_per_request))

    return asyncio.run(run())


def raw_rows(spec, n=5, offset=0):
    """`n` raw rows of the train table, label dropped (a DataFrame)."""
    table = dataplane.lake_of(spec).read("transactions").slice(offset, n)
    return table.drop_columns([spec.data.label_column]).to_pandas()


def labels_of(spec, n=5, offset=0) -> list:
    return dataplane.lake_of(spec).read("transactions").slice(offset, n).column(spec.data.label_column).to_pylist()


def as_json_rows(frame):
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def scraped_metrics(*names: str, timeout: float = 60.0) -> str:
    """The Prometheus text Ray's metrics agent serves on this node, once it shows every one of `names`."""
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    text = ""

    def exported():
        nonlocal text
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return all(name in text for name in names)

    wait_until(exported, timeout, every=2)  # the agent exports every few seconds
    return text


class SteadyLoad(Background):
    """Requests from a background thread, one after another (`pause` s apart), every status code kept (and with it
    when the request was sent and which model version answered it)."""

    def __init__(self, url, row, pause=0.0, **headers):
        super().__init__(pause)
        self.url, self.row, self.headers = url, row, headers
        self.codes = []
        self.outcomes: list[tuple[float, object, str | None]] = []  # (when sent, status code or error, version of a 200)

    def run_once(self):
        sent = time.time()
        try:
            response = post(f"{self.url}/v1/predict", {"row": self.row}, **self.headers)
        except requests.RequestException as exc:
            outcome, version = type(exc).__name__, None
        else:
            outcome, version = response.status_code, _version_of(response)
        self.outcomes.append((sent, outcome, version))
        self.codes.append(outcome)

    def since(self, t: float) -> list[tuple[object, str | None]]:
        """(status code or error, model version of a 200) of every request sent at or after `t` that has its outcome:
        what the load saw of a change made at `t`."""
        return [(outcome, version) for sent, outcome, version in list(self.outcomes) if sent >= t]


def _version_of(response) -> str | None:
    if response.status_code != 200:
        return None
    try:
        return response.json().get("model_version")
    except ValueError:  # not JSON: the status code tells the test enough
        return None


class AnsweredLoad(Background):
    """One request after another from a thread; the request id and time of every 200 kept, every other outcome
    counted with its time."""

    def __init__(self, url: str, row: dict, pause: float = 0.0, rows: list[dict] | None = None):
        super().__init__(pause)
        self.url, self.rows = url, rows or [row]
        self.answered: list[str] = []
        self.answered_at: dict[str, float] = {}
        self.latency: list[tuple[float, float]] = []  # (when answered, seconds) of every 200
        self.failed: Counter = Counter()
        self.failed_at: list[float] = []
        self.errors: list[str] = []  # what the client library said of each failed request
        self.session = requests.Session()

    def run_once(self):
        row, sent = self.rows[len(self.answered) % len(self.rows)], time.time()
        try:
            response = self.session.post(f"{self.url}/v1/predict", json={"row": row},
                                         headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        except requests.RequestException as exc:
            self._failed(type(exc).__name__)
            self.errors.append(str(exc)[:200])
            return
        if response.status_code == 200:
            self.answered.append(response.json()["request_id"])
            self.answered_at[self.answered[-1]] = now = time.time()
            self.latency.append((now, now - sent))
        else:
            self._failed(response.status_code)

    def _failed(self, outcome) -> None:
        self.failed[outcome] += 1
        self.failed_at.append(time.time())


def longest_silence(loads: list[AnsweredLoad], since: float) -> float:
    """The longest time after `since` in which none of `loads` got an answer (seconds): what clients saw of an
    outage."""
    times = sorted([since] + [t for load in loads for t in load.answered_at.values() if t >= since])
    return max(b - a for a, b in zip(times, times[1:])) if len(times) > 1 else float("inf")


def logged_counts(spec, ids: set[str]) -> Counter:
    """How often each of `ids` is in the inference log as answered (a shadow version's rows left out)."""
    logged = dataplane.lake_of(spec).read(spec.serve.inference_log_table, columns=["request_id", "shadow"])
    return Counter(i for i, shadow in zip(logged.column("request_id").to_pylist(), logged.column("shadow").to_pylist())
                   if i in ids and not shadow)


def labels_flushed(spec, url, timeout: float = 60.0) -> bool:
    """Whether a label sent now (for a request of its own) reaches the labels table within `timeout`. The ingress
    replica that took it has then flushed everything it buffered before it: where one replica serves (as behind the
    `served` fixture), a label it took, or wrongly buffered, before this call has landed by the time it returns True."""
    request_id = post(f"{url}/v1/predict", {"row": as_json_rows(raw_rows(spec, 1))[0]}).json()["request_id"]
    assert post(f"{url}/v1/feedback", {"request_id": request_id, "label": True}).json()["stored"] is True
    lake = dataplane.lake_of(spec)

    def landed():
        return request_id in lake.read(spec.serve.labels_table, columns=["request_id"]).column("request_id").to_pylist()

    return bool(wait_until(landed, timeout, every=0.5))


def ingress_replicas(app: str) -> list:
    """Handles on the live ingress replicas of Serve application `app`."""
    import ray

    return [ray.get_actor(name, namespace="serve") for name in replica_names(app)]


def haproxies() -> list:
    """The HAProxy processes on this machine (the one Serve runs in front of the ingress replicas)."""
    import psutil

    return [p for p in psutil.process_iter(["name"]) if p.info["name"] == "haproxy"]


def replica_names(app: str) -> list[str]:
    """The actor names of the live ingress replicas of Serve application `app`."""
    import ray

    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith(f"SERVE_REPLICA::{app}#ingress#"))


def ingress_running(app: str) -> int:
    """How many ingress replicas of `app` Serve reports RUNNING (constructed and healthy)."""
    from ray import serve

    return serve.status().applications[app].deployments["ingress"].replica_states.get("RUNNING", 0)


def watched_project(folder, starter_text: str, name: str, tracking_uri: str | None = None):
    """The starter project as `name` in `folder`: served by two in-process ingress replicas on a free port (API key
    KEY, a flush every 0.5 s) and watched by a monitor with windows of 300 rows, polled every second, retraining only
    on approval. Its spec file's path."""
    from helpers import free_port

    from mlray.serve.auth import hash_key

    text = starter_text.replace("name: card-fraud", f"name: {name}", 1).replace("min_rows: 1000", "min_rows: 10")
    if tracking_uri:
        text = text.replace("mlflow_tracking_uri: null", f"mlflow_tracking_uri: {tracking_uri}")
    text = (text.replace("\ntrain: {}", "")
            + f"serve:\n  port: {free_port()}\n  log_flush_s: 0.5\n  api_keys: ['{hash_key(KEY)}']\n"
            + "  autoscaling: {min_replicas: 2, max_replicas: 2}\n"
            + "monitor:\n  window_rows: 300\n  min_window_rows: 50\n  poll_interval: 1s\n  retrain: {mode: approval}\n")
    (folder / "mlray.yaml").write_text(text)
    return folder / "mlray.yaml"
