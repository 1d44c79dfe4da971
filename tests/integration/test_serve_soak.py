"""Ten minutes of steady traffic with everything running: a canary rollout from start to promotion, the drift monitor
and its log upkeep. Nothing fails with a 5xx, memory does not grow, and every answered request is in the inference
log once. Latency is printed, first minute against last, but not asserted: on a shared 2-core machine a timing
threshold measures the neighbours (speed lives in benchmarks/).
Memory is compared with its value after a minute of warm-up in which every
path was taken once (a version deployed and promoted: the control plane imports MLflow at its first alias move)."""

import time
from collections import Counter
from contextlib import ExitStack

import psutil
import pytest
from serving import AnsweredLoad, as_json_rows, haproxies, logged_counts, raw_rows, register_copy, wait_until

pytestmark = pytest.mark.slow
SOAK_S, WARM_UP_S, CANARY_AT_S = 600, 60, 120
CLIENTS, PAUSE_S = 4, 0.01
MLRAY_ACTORS = ("ControlPlane", "RolloutController", "DriftMonitor", "ServeReplica:")
# the monitor closes a window a minute (or 2,000 rows), compacts the log every two minutes, and only proposes
# retraining (approval): the soak is about serving, not about what the monitor thinks of a few repeated rows
SOAK_MONITOR = {"window_rows": 2000, "min_window_rows": 100, "window": "1m", "poll_interval": "2s",
                "compact_every": "2m", "retrain": {"mode": "approval"}}
SOAK_ROLLOUT = {"steps": ["shadow", 25, 50, 100], "interval": "20s", "min_requests": 5,
                "checks": {"max_p99_latency_ratio": 20, "max_divergence": 1.0}}


def _soak_spec(spec):
    from mlray.spec import MonitorSpec, RolloutSpec

    return spec.model_copy(update={"monitor": MonitorSpec.model_validate(SOAK_MONITOR),
                                   "rollout": RolloutSpec.model_validate(SOAK_ROLLOUT)})


def _processes(app: str) -> dict[str, psutil.Process]:
    """mlray's actors (Serve replicas of `app` included) and HAProxy, by a name that stays with the process."""
    from ray.util.state import list_actors

    actors = {f"{a.class_name} {a.actor_id[:8]}": psutil.Process(a.pid)
              for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000)
              if a.class_name.startswith(MLRAY_ACTORS) and (not a.class_name.startswith("ServeReplica:")
                                                            or a.class_name.startswith(f"ServeReplica:{app}"))}
    return actors | {f"haproxy {p.pid}": p for p in haproxies()}


def _rss(processes: dict[str, psutil.Process]) -> dict[str, int]:
    found = {}
    for name, process in processes.items():
        try:
            found[name] = process.memory_info().rss
        except psutil.NoSuchProcess:  # replaced meanwhile (a retired version's replica)
            pass
    return found


def _p99(latency: list[tuple[float, float]], start: float, end: float) -> float:
    import numpy as np

    return float(np.percentile([s for t, s in latency if start <= t < end], 99))


def test_ten_minutes_of_traffic_with_a_rollout_the_monitor_and_upkeep_no_5xx_no_creep_nothing_lost(served):
    from mlray import dataplane
    from mlray.monitor import actor
    from mlray.registry.models import Registry
    from mlray.rollout.controller import client as rollout_client
    from mlray.serve import control
    from mlray.serve.deploy import rollback_to_previous
    from mlray.window_reports import read_reports

    base, url, _ = served
    spec = _soak_spec(base)
    warm_up_version, challenger = register_copy(spec), register_copy(spec)
    actor.start(spec)
    loads = [AnsweredLoad(url, {}, pause=PAUSE_S, rows=as_json_rows(raw_rows(spec, 500, offset=100 * i)))
             for i in range(CLIENTS)]
    try:
        with ExitStack() as stack:
            began = time.time()
            for load in loads:
                stack.enter_context(load)
            # warm-up: every path taken once (a version deployed, started and promoted at once, the aliases moved)
            rollout_client(spec).start(warm_up_version, actor="user:soak")
            rollout_client(spec).promote("warm-up", actor="user:soak")
            time.sleep(max(0.0, began + WARM_UP_S - time.time()))  # load pacing: the soak's schedule (warm-up)
            processes = _processes(spec.name)
            warm = _rss(processes)
            time.sleep(CANARY_AT_S - WARM_UP_S)  # load pacing: the soak's schedule (the canary starts at 2 min)
            rollout_client(spec).start(challenger, actor="user:soak")
            time.sleep(SOAK_S - CANARY_AT_S - 5)  # load pacing: the soak's schedule (its length)
            end = _rss(processes)
            time.sleep(5)  # load pacing: the soak's schedule (memory read 5 s before its end)
            ended = time.time()
        rollout = control.client(spec).snapshot()["rollout"]
        windows = len(read_reports(dataplane.lake_of(spec)))
    finally:
        actor.stop(spec)
    answered = {i for load in loads for i in load.answered}
    failed = sum((load.failed for load in loads), Counter())
    latency = [pair for load in loads for pair in load.latency]
    first = _p99(latency, began + WARM_UP_S, began + WARM_UP_S + 60)
    last = _p99(latency, ended - 60, ended)
    assert wait_until(lambda: set(logged_counts(spec, answered)) == answered, timeout=120, every=2), \
        f"{len(answered - set(logged_counts(spec, answered)))} answered requests never reached the log"
    logged = logged_counts(spec, answered)
    growth = {name: end[name] / warm[name] for name in warm if name in end}
    print(f"\nsoak of {ended - began:.0f} s, {CLIENTS} clients: {len(answered)} answered 200, failed {dict(failed)}; "
          f"p99 {1000 * first:.1f} ms in the first minute after warm-up, {1000 * last:.1f} ms in the last "
          f"({last / first:.2f}x); rollout {rollout['status']} after {len(rollout['history'])} analyses; "
          f"{windows} monitor windows; {sum(logged.values())} logged, none twice")
    for name in sorted(growth):
        print(f"  RSS {name}: {warm[name] / 2**20:.0f} -> {end[name] / 2**20:.0f} MiB ({growth[name]:.2f}x)")
    try:
        assert not [code for code in failed if isinstance(code, int) and code >= 500]
        assert sum(failed.values()) <= 0.001 * (len(answered) + sum(failed.values()))
        assert rollout["status"] == "promoted" and Registry(spec).version_of("champion") == challenger
        assert all(n == 1 for n in logged.values())
        assert all(0.8 <= g <= 1.2 for g in growth.values()), growth
    finally:
        rollback_to_previous(spec, actor="user:soak")
        control.client(spec).set_alias("champion", "1", "user:test")  # for the modules after (each deploys its own plan)
