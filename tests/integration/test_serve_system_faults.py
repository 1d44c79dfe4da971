"""Serve's own machinery killed while requests flow (its controller, the HAProxy process, the proxy actor that runs
HAProxy): traffic goes on or comes back within the time printed, and Serve ends as it was configured (one healthy
proxy, one HAProxy, the application running with its replicas, the champion answering)."""

import os
import signal
import time
from collections import Counter
from contextlib import ExitStack

import pytest
from serving import AnsweredLoad, as_json_rows, haproxies, ingress_replicas, longest_silence, post, raw_rows, wait_until

pytestmark = pytest.mark.slow
CLIENTS = 4


def _controller():
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    return ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)


def _proxy_actors() -> list[str]:
    import ray

    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith("SERVE_PROXY_ACTOR"))


def _kill_controller() -> None:
    import ray

    ray.kill(_controller(), no_restart=False)  # a crash: Ray restarts it (Serve's controller is detached)


def _kill_haproxy() -> None:
    for process in haproxies():
        os.kill(process.pid, signal.SIGKILL)


def _kill_proxy_actor() -> None:
    import ray

    for name in _proxy_actors():
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


def _named(status) -> str:
    """A status as its name (Serve gives some as enums, some as strings)."""
    return getattr(status, "value", status)


def _as_configured(spec, url) -> str:
    """What is not yet as configured ("" once Serve is whole again: its proxies healthy, one HAProxy, the application
    running with the spec's ingress replicas, and the champion answering)."""
    from ray import serve

    try:
        status = serve.status()
        application = status.applications[spec.name]
        found = {"proxies": sorted(_named(s) for s in status.proxies.values()), "haproxy": len(haproxies()),
                 "application": _named(application.status),
                 "ingress": {_named(state): n for state, n in application.deployments["ingress"].replica_states.items()},
                 "ingress actors": len(ingress_replicas(spec.name))}
        wanted = {"proxies": ["HEALTHY"], "haproxy": 1, "application": "RUNNING",
                  "ingress": {"RUNNING": spec.serve.ingress_replicas}, "ingress actors": spec.serve.ingress_replicas}
        if found != wanted:
            return f"{found} (wanted {wanted})"
        answer = post(f"{url}/v1/predict", {"row": as_json_rows(raw_rows(spec, 1))[0]})
        return "" if answer.status_code == 200 and answer.json()["model_version"] == "1" else answer.text
    except Exception as exc:  # noqa: BLE001 - the controller or the proxy is not back yet
        return repr(exc)


def _until_whole(spec, url, timeout: float) -> str:
    """Wait until Serve is as configured; what was still wrong if it never got there."""
    last = []
    wait_until(lambda: not last.append(_as_configured(spec, url)) and last[-1] == "", timeout=timeout, every=1)
    return last[-1]


KILLS = {"Serve's controller": _kill_controller, "the HAProxy process": _kill_haproxy,
         "Serve's proxy actor (HAProxy's manager)": _kill_proxy_actor}


@pytest.mark.parametrize("victim", KILLS)
def test_serve_machinery_killed_under_load_traffic_comes_back_and_nothing_is_left_half_configured(served, victim):
    spec, url, _ = served
    assert (wrong := _until_whole(spec, url, timeout=120)) == "", f"Serve as configured before the kill: {wrong}"
    before = {"haproxy": {p.pid for p in haproxies()}, "proxies": _proxy_actors()}
    loads = [AnsweredLoad(url, as_json_rows(raw_rows(spec, 1))[0]) for _ in range(CLIENTS)]
    with ExitStack() as stack:
        for load in loads:
            stack.enter_context(load)
        time.sleep(3)  # fault timing: the kill 3 s into steady traffic
        killed_at = time.time()
        KILLS[victim]()
        assert (wrong := _until_whole(spec, url, timeout=180)) == "", f"Serve whole after {victim}: {wrong}"
        whole_after = time.time() - killed_at
        time.sleep(5)  # load pacing: 5 s of traffic after the recovery (asserted below: it must all be answered)
        stopped_at = time.time()
    failed = sum((load.failed for load in loads), Counter())
    total = sum(len(load.answered) for load in loads) + sum(failed.values())
    silence = longest_silence(loads, killed_at)
    print(f"\n{victim} killed under load ({CLIENTS} clients): {sum(failed.values())} of {total} requests failed "
          f"{dict(failed)}; longest time without an answer {silence:.1f} s; Serve whole again after "
          f"{whole_after:.1f} s (HAProxy {sorted(before['haproxy'])} -> {sorted(p.pid for p in haproxies())})")
    assert all(t < stopped_at - 5 for load in loads for t in load.failed_at), "no request fails once Serve is whole"
    if victim == "Serve's controller":  # the data path does not go through it
        assert not failed and silence < 2.0
