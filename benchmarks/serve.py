"""Serve benchmark: mlray's full serving path against plain Ray Serve and plain FastAPI/uvicorn.

One run, one model, one load generator for all three targets, every byte on 127.0.0.1:

(a) mlray with the defaults a user gets: `deploy` + `set_traffic` with a 90/10 canary between versions 1
    and 2 (the same package registered twice), API-key auth, the schema-generated validation, the inference
    log and metrics on: POST /v1/predict through the ingress mlray's Ray starts with (HAProxy, direct
    ingress, Serve's throughput-optimized mode) → the ingress replica, which scores in process
    (`model_placement: auto` on a CPU machine) with `@serve.batch`.
(b) plain Ray Serve, set up as a competent user would: one `@serve.deployment` with a FastAPI ingress that
    loads the same package and scores the posted row, with the ingress's CPUs, max_ongoing_requests and
    autoscaling (Serve's default of 5 ongoing requests starves it under load); same Serve instance and
    proxy, route prefix /plain. No batching: that is mlray's edge.
(c) plain FastAPI on uvicorn, one process: the very same FastAPI handler as (b), another port.

Other configurations stay available: `--placement replicas` (one deployment per version) and
`--proxy serve` (Serve's own proxy, as on a cluster started without RAY_SERVE_ENABLE_HA_PROXY=1).

The load generator is a closed loop: `concurrency` keep-alive HTTP/1.1 connections (asyncio, raw
sockets), each sending the next request when the last one answered, for a warm-up and then a
measured window. It reports requests/s, p50/p99 latency and every non-200 answer or failure.
Batching's effect: (a) again with `serve.batching.max_batch_size: 1` (the default is 16).

The model is a small one trained once with `train_model` and cached under benchmarks/.cache.

    python -m benchmarks.serve --duration 12 --concurrency 1 16 64
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

# No `from __future__ import annotations` here: Serve pickles (b)'s handler by value, and FastAPI must see its
# `request: Request` as the class (a string annotation no longer resolves there, and the route answers 422).
from fastapi import FastAPI, Request

from benchmarks.common import CACHE, SMALL_TRAIN, ensure_small_model, machine, print_table, write_result
from mlray.fast_ingress import HAPROXY, free_port, haproxy_binary

ROOT = Path(__file__).parents[1]
HOME = CACHE / "serve"
KEY = "bench-serve-key-0123456789abcdefghijklmn"
MODEL_URI_ENV = "MLRAY_BENCH_MODEL_URI"
REQUEST_TIMEOUT_S = 30.0
TARGETS = {"mlray": "(a) mlray", "plain_serve": "(b) plain Serve", "fastapi": "(c) FastAPI", "mlray_batch1": "(a), batch 1"}


# --------------------------------------------------------------------------- the model


def project(port: int, max_batch_size: int | None = None, placement: str = "auto"):
    """The cached project's spec serving on 127.0.0.1:`port` with one API key, where the models run (and a batch
    size, when given)."""
    from mlray.serve.auth import hash_key
    from mlray.spec import load_spec, starter_spec

    HOME.mkdir(parents=True, exist_ok=True)
    batching = f"  batching: {{max_batch_size: {max_batch_size}}}\n" if max_batch_size else ""
    serve_section = (f"\nserve:\n  host: 127.0.0.1\n  port: {port}\n  api_keys: ['{hash_key(KEY)}']\n"
                     f"  model_placement: {placement}\n{batching}")
    path = HOME / ("mlray.yaml" if max_batch_size is None else f"mlray-batch{max_batch_size}.yaml")
    path.write_text(starter_spec() + SMALL_TRAIN + serve_section)
    return load_spec(path)


def ensure_models(spec) -> str:
    """Versions 1 (the champion, trained once) and 2 (the same package registered again); returns 1's URI."""
    import mlflow

    from mlray.registry.models import Registry

    registry = Registry(spec)
    ensure_small_model(spec, HOME)
    versions = {v["version"]: v for v in registry.versions()}
    assert registry.version_of("champion") == "1", f"the cached project's champion is not version 1: {versions}"
    if "2" not in versions:
        mlflow.register_model(f"runs:/{versions['1']['run_id']}/model", spec.name)  # version 2: the same package
    return registry.artifact_uri(spec.name, "1")


def request_row(spec) -> dict:
    """One raw row of the training table without its label (and without nulls), as JSON would carry it."""
    from mlray import dataplane

    table = dataplane.lake_of(spec).read(spec.data.train_table).slice(0, 50).drop_columns([spec.data.label_column])
    rows = json.loads(table.to_pandas().to_json(orient="records", date_format="iso"))
    return next(r for r in rows if all(v is not None for v in r.values()))


# --------------------------------------------------------------------------- (b) and (c): the plain handler


def score(package, body: dict) -> dict:
    """What (b) and (c) do per request: the posted row as Arrow, the package's `predict_frame`, the records."""
    import pyarrow as pa

    from mlray.registry.package import predict_frame

    frame = predict_frame(package.net, package.config, package.fitted, pa.Table.from_pylist([body["row"]]))
    return {"predictions": frame.to_dict("records")}


def uvicorn_app():
    """(c): the FastAPI app uvicorn serves (`--factory`), the package from $MLRAY_BENCH_MODEL_URI."""
    from mlray.registry.package import load_package

    package = load_package(os.environ[MODEL_URI_ENV])
    api = FastAPI()

    @api.post("/v1/predict")
    async def predict(request: Request) -> dict:
        return score(package, await request.json())

    return api


def plain_serve_app(model_uri: str, serve_spec):
    """(b): one plain Serve deployment with the same FastAPI handler and the resources, concurrency and scaling of
    mlray's ingress."""
    from ray import serve

    from mlray.serve.ingress import ingress_scaling

    api = FastAPI()

    @serve.deployment(name="plain", ray_actor_options={"num_cpus": serve_spec.ingress_cpus},
                      max_ongoing_requests=serve_spec.ingress_max_ongoing, **ingress_scaling(serve_spec, True))
    @serve.ingress(api)
    class Plain:
        def __init__(self, uri: str):
            from mlray.registry.package import load_package

            self.package = load_package(uri)

        @api.post("/v1/predict")
        async def predict(self, request: Request) -> dict:
            return score(self.package, await request.json())

    return Plain.bind(model_uri)


def start_uvicorn(model_uri: str, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "uvicorn", "benchmarks.serve:uvicorn_app", "--factory", "--host", "127.0.0.1",
               "--port", str(port), "--no-access-log", "--log-level", "warning"]
    return subprocess.Popen(command, cwd=ROOT, env=os.environ | {MODEL_URI_ENV: model_uri})


def wait_ready(url: str, body: bytes, seconds: float = 120) -> None:
    """Until `url` answers the benchmark's request with 200 (a target that is up and routed)."""
    deadline = time.time() + seconds
    last: object = None
    while time.time() < deadline:
        request = urllib.request.Request(url, data=body, headers={"content-type": "application/json",
                                                                  "authorization": f"Bearer {KEY}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:  # 404 before the route exists, 503 while starting
            last = f"{exc.code}: {exc.read()[:300]!r}"
        except OSError as exc:  # not listening yet
            last = exc
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer 200 within {seconds:.0f}s (last: {last})")


# --------------------------------------------------------------------------- the load generator


def http_request(path: str, port: int, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, server closes) of one HTTP/1.1 response: Content-Length or chunked."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, close = 0, False, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    if not chunked:
        return status, await reader.readexactly(length), close
    parts = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        parts.append((await reader.readexactly(size + 2))[:-2])
    await reader.readuntil(b"\r\n")  # the end of the (empty) trailer
    return status, b"".join(parts), close


def model_version_of(body: bytes) -> str | None:
    at = body.find(b'"model_version":"')
    if at < 0:
        return None
    start = at + len(b'"model_version":"')
    return body[start:body.find(b'"', start)].decode()


async def _connection(port: int, request: bytes, record_from: float, stop_at: float, out: dict) -> None:
    """One closed-loop client: send, wait for the whole answer, send again, until `stop_at`.

    An answer counts when it arrives after the warm-up: towards the throughput when it arrives inside the
    window, towards the latencies and errors also when it arrives after it (the last request of each
    connection is always awaited, so the next target starts on an idle server and a stall is not hidden)."""
    reader = writer = None
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    started = time.perf_counter()
                writer.write(request)
                status, body, close = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
            if time.perf_counter() >= record_from:
                out["failures"][type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.05)
            continue
        done = time.perf_counter()
        if done >= record_from:
            out["statuses"][status] += 1
            if status == 200:
                out["latencies"].append(done - started)
                out["in_window" if done <= stop_at else "late"] += 1
                version = model_version_of(body)
                if version is not None:
                    out["versions"][version] += 1
            elif len(out["samples"]) < 5:
                out["samples"].append(f"{status}: {body[:200].decode(errors='replace')}")
        if close:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def measure(path: str, port: int, body: bytes, concurrency: int, duration: float, warmup: float) -> dict:
    """Closed-loop load: `concurrency` connections for `warmup` + `duration` seconds; what the window saw."""
    out = {"latencies": [], "in_window": 0, "late": 0, "statuses": Counter(), "failures": Counter(),
           "versions": Counter(), "samples": []}
    request = http_request(path, port, body)

    async def main():
        record_from = time.perf_counter() + warmup
        stop_at = record_from + duration
        await asyncio.gather(*(_connection(port, request, record_from, stop_at, out) for _ in range(concurrency)))

    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    load, cpu, wall = os.getloadavg()[0], time.process_time(), time.perf_counter()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    latencies = out["latencies"]
    errors = sum(n for s, n in out["statuses"].items() if s != 200) + sum(out["failures"].values())
    return {
        "concurrency": concurrency, "seconds": duration, "ok": out["in_window"], "errors": errors,
        "requests_per_s": out["in_window"] / duration, "late": out["late"],
        "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "p99_ms": 1000 * percentile(latencies, 0.99) if latencies else None,
        "max_ms": 1000 * max(latencies) if latencies else None,
        "statuses": {str(k): v for k, v in out["statuses"].items()}, "failures": dict(out["failures"]),
        "error_samples": out["samples"], "versions": dict(out["versions"]),
        "client_cpu": cpu / wall, "drain_s": wall - warmup - duration, "loadavg_1m_before": load,
        "loadavg_1m_after": os.getloadavg()[0],
    }


# --------------------------------------------------------------------------- the run


def model_replicas(app: str) -> int | None:
    """RUNNING replicas of an app's 'model' deployment now (autoscaling moves it)."""
    from ray import serve

    application = serve.status().applications.get(app)
    if application is None or "model" not in application.deployments:
        return None
    states = application.deployments["model"].replica_states
    return sum(n for state, n in states.items() if getattr(state, "value", str(state)) == "RUNNING")


def deploy_canary(spec) -> None:
    """(a) as a user gets it: champion 1 served, version 2 started next to it, then 90/10 live."""
    from mlray.serve.auth import KeyRing
    from mlray.serve.deploy import deploy, set_traffic
    from mlray.serve.routing import TrafficPlan

    deploy(spec, versions=["2"], plan=TrafficPlan.only("1"), keys=KeyRing.for_serving(spec.serve))
    set_traffic(spec, TrafficPlan("1", {"1": 0.9, "2": 0.1}))


def undeploy_mlray(spec) -> None:
    from ray import serve

    from mlray.serve.pool import model_app_name

    for app in (spec.name, model_app_name(spec.name, "1"), model_app_name(spec.name, "2")):
        serve.delete(app)


def run(concurrencies: list[int], duration: float, warmup: float, num_cpus: int | None, batching: bool,
        placement: str = "auto", proxy: str = "default") -> dict:
    import ray
    from ray import serve

    from benchmarks.common import start_ray
    from mlray import dataplane
    from mlray.serve.pool import model_app_name

    serve_port, uvicorn_port = free_port(), free_port()
    spec = project(serve_port, placement=placement)
    if proxy == "serve":  # Serve's own proxy: mlray's Ray starts with HAProxy unless told otherwise
        os.environ[HAPROXY] = "0"
    ingress = "HAProxy + direct ingress" if proxy == "default" and haproxy_binary() else "Serve's proxy"
    start_ray(num_cpus)
    model_uri = ensure_models(spec)
    shutil.rmtree(dataplane.lake_of(spec).uri(spec.serve.inference_log_table), ignore_errors=True)  # a fresh log
    body = json.dumps({"row": request_row(spec)}).encode()
    uvicorn = start_uvicorn(model_uri, uvicorn_port)
    try:
        started = time.perf_counter()
        deploy_canary(spec)
        deployed = time.perf_counter()
        serve.run(plain_serve_app(model_uri, spec.serve), name="plain", route_prefix="/plain")
        plain_deployed = time.perf_counter()
        targets = {"mlray": ("/v1/predict", serve_port), "plain_serve": ("/plain/v1/predict", serve_port),
                   "fastapi": ("/v1/predict", uvicorn_port)}
        for path, port in targets.values():
            wait_ready(f"http://127.0.0.1:{port}{path}", body)
        setup = {"mlray_deploy_s": deployed - started, "plain_serve_run_s": plain_deployed - deployed}
        results = {c: {} for c in concurrencies}
        for concurrency in concurrencies:  # the three targets back to back, so they share the machine's moment
            for target, (path, port) in targets.items():
                entry = measure(path, port, body, concurrency, duration, warmup)
                if target == "mlray":
                    entry["model_replicas"] = {v: model_replicas(model_app_name(spec.name, v)) for v in ("1", "2")}
                results[concurrency][target] = entry
                show(target, entry)
        if batching:
            undeploy_mlray(spec)
            spec1 = project(serve_port, max_batch_size=1, placement=placement)
            deploy_canary(spec1)
            wait_ready(f"http://127.0.0.1:{serve_port}/v1/predict", body)
            for concurrency in concurrencies:
                entry = measure("/v1/predict", serve_port, body, concurrency, duration, warmup)
                entry["model_replicas"] = {v: model_replicas(model_app_name(spec.name, v)) for v in ("1", "2")}
                results[concurrency]["mlray_batch1"] = entry
                show("mlray_batch1", entry)
    finally:
        uvicorn.terminate()
        uvicorn.wait(timeout=30)
        serve.shutdown()
        ray.shutdown()
    entries = []
    for concurrency, sides in results.items():
        ours, plain, fastapi = sides["mlray"], sides["plain_serve"], sides["fastapi"]
        entry = {"concurrency": concurrency, **sides,
                 "ratio": ratio(ours["requests_per_s"], plain["requests_per_s"]),
                 "ratio_fastapi": ratio(ours["requests_per_s"], fastapi["requests_per_s"]),
                 "p99_ratio": ratio(ours["p99_ms"], plain["p99_ms"])}
        if "mlray_batch1" in sides:
            entry["batching_gain"] = ratio(ours["requests_per_s"], sides["mlray_batch1"]["requests_per_s"])
        entry["summary"] = (f"concurrency {concurrency}: {times(entry['ratio'])} plain Serve (p99 {ms(ours['p99_ms'])} vs "
                            f"{ms(plain['p99_ms'])} ms), {times(entry['ratio_fastapi'])} FastAPI")
        entries.append(entry)
    return {"benchmark": "serve", "placement": placement, "proxy": proxy, "ingress": ingress,
            "duration_s": duration, "warmup_s": warmup, "ray_num_cpus": num_cpus,
            "request": json.loads(body), "setup": setup, "machine": machine(),
            "goal": GOAL, "goals": goals(entries), "results": entries}


GOAL = ("(a)/(b) ≥ 1× at 1 connection with p99 ≤ 1.1× plain Serve's, ≥ 1.5× at 16 and 64; (a)/(c) ≥ 1× at 16 and "
        "64; no errors; the canary's share 10% ± 2%")


def goals(entries: list[dict]) -> dict:
    """Each goal with its value and verdict (met or missed)."""
    out = {}

    def goal(name: str, value: float | None, wanted: str, met: bool) -> None:
        out[name] = {"value": value, "goal": wanted, "met": bool(value is not None and met)}

    for entry in entries:
        c, ours = entry["concurrency"], entry["mlray"]
        if c == 1:
            goal("plain_serve_c1", entry["ratio"], "≥ 1×", (entry["ratio"] or 0) >= 1.0)
            goal("plain_serve_p99_c1", entry["p99_ratio"], "≤ 1.1×", (entry["p99_ratio"] or 9) <= 1.1)
        else:
            goal(f"plain_serve_c{c}", entry["ratio"], "≥ 1.5×", (entry["ratio"] or 0) >= 1.5)
            goal(f"fastapi_c{c}", entry["ratio_fastapi"], "≥ 1×", (entry["ratio_fastapi"] or 0) >= 1.0)
        errors = sum(entry[t]["errors"] for t in TARGETS if t in entry)
        goal(f"errors_c{c}", errors, "0", errors == 0)
        served = sum(ours["versions"].values())
        share = ours["versions"].get("2", 0) / served if served else None
        goal(f"canary_share_c{c}", share, "0.10 ± 0.02", share is not None and abs(share - 0.10) <= 0.02)
    return out


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def show(target: str, entry: dict) -> None:
    p50, p99 = entry["p50_ms"], entry["p99_ms"]
    versions = f", versions {entry['versions']}" if entry["versions"] else ""
    replicas = f", model replicas {entry['model_replicas']}" if "model_replicas" in entry else ""
    print(f"{target:>13} c={entry['concurrency']:<3} {entry['requests_per_s']:7.1f} req/s  "
          f"p50 {p50 or float('nan'):7.1f} ms  p99 {p99 or float('nan'):7.1f} ms  errors {entry['errors']}  "
          f"late {entry['late']}"
          f"{versions}{replicas}  (client CPU {entry['client_cpu']:.0%}, load {entry['loadavg_1m_before']:.1f})",
          flush=True)
    if entry["errors"]:
        print(f"{'':>13} errors: statuses {entry['statuses']}, failures {entry['failures']}, e.g. {entry['error_samples'][:2]}",
              flush=True)


def report(result: dict) -> None:
    rows = []
    for r in result["results"]:
        for target in TARGETS:
            if target in r:
                e = r[target]
                rows.append([str(r["concurrency"]), TARGETS[target], f"{e['requests_per_s']:,.1f}",
                             f"{e['p50_ms']:.1f}" if e["p50_ms"] else "-", f"{e['p99_ms']:.1f}" if e["p99_ms"] else "-",
                             str(e["errors"])])
        rows.append([str(r["concurrency"]), "(a)/(b), (a)/(c)", f"{times(r['ratio'])}, {times(r['ratio_fastapi'])}",
                     "", times(r["p99_ratio"]), ""])
    print_table("serve: (a) mlray full path, 90/10 canary; (b) one plain Serve deployment; (c) FastAPI on uvicorn; "
                "(a) with max_batch_size 1 (closed loop, one raw row per request)",
                ["concurrency", "target", "req/s", "p50 ms", "p99 ms", "errors"], rows)
    for name, goal in result["goals"].items():
        value = goal["value"]
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"{name}: {shown} (goal {goal['goal']}) {'met' if goal['met'] else 'MISSED'}", flush=True)
    suffix = ("" if result["placement"] == "auto" else f"-{result['placement']}") + (
        "" if result["proxy"] == "default" else f"-{result['proxy']}-proxy")
    write_result(f"serve{suffix}", result)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=12.0, help="measured seconds per target and concurrency")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each window")
    parser.add_argument("--num-cpus", type=int, default=4, help="Ray logical CPUs (more than the cores, as in the tests)")
    parser.add_argument("--no-batching", dest="batching", action="store_false",
                        help="skip the run of (a) with max_batch_size 1")
    parser.add_argument("--placement", choices=["auto", "replicas", "ingress"], default="auto",
                        help="serve.model_placement of (a) (default: the spec's default, auto)")
    parser.add_argument("--proxy", choices=["default", "serve"], default="default",
                        help="default: what mlray's Ray starts with (HAProxy when its binary exists); serve: Serve's "
                             "own proxy for (a) and (b)")
    args = parser.parse_args(argv)
    result = run(args.concurrency, args.duration, args.warmup, args.num_cpus, args.batching, args.placement,
                 args.proxy)
    report(result)
    return result


if __name__ == "__main__":
    main()
