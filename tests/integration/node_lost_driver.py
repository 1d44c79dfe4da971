"""Drivers of the node-lost test, run as their own processes on a second Ray cluster of two nodes on this machine
(the test's own process is joined to the suite's Ray). Each prints one JSON line.

    RAY_ADDRESS=HEAD:PORT python node_lost_driver.py setup SPEC PACKAGE
        on the worker node: serve the project, start its monitor
    RAY_ADDRESS=HEAD:PORT python node_lost_driver.py observe SPEC RAYLET_PID ROWS
        on the head: load (ROWS: a JSON file of request rows), kill the worker node, watch it heal
"""

import json
import os
import signal
import sys
import time
import traceback

import ray
from helpers import wait_until
from serving import AnsweredLoad, ingress_running, logged_counts, longest_silence

from mlray import dataplane
from mlray.monitor import actor
from mlray.serve import control
from mlray.spec import load_spec
from mlray.window_reports import read_reports

WORKER_IP = "127.0.0.2"


def must(found, what: str):
    """`found` (what a `wait_until` returned), or an AssertionError saying what never happened: the driver then exits
    non-zero and the test shows its stderr. For what the rest of a driver stands on."""
    if not found:
        raise AssertionError(f"timed out waiting until {what}")
    return found


def placement(spec) -> dict[str, str]:
    """The node ('head' or 'worker') each of mlray's long-lived pieces runs on."""
    from ray.util.state import list_actors, list_nodes

    nodes = list_nodes(filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)  # a lost node is missing
    ips = {n.node_id: "worker" if n.node_ip == WORKER_IP else "head" for n in nodes}
    wanted = {"ControlPlane": "control plane", "DriftMonitor": "monitor", f"ServeReplica:{spec.name}:ingress": "ingress"}
    found: dict[str, str] = {}
    for a in list_actors(filters=[("state", "=", "ALIVE")], raise_on_missing_output=False):
        if a.class_name in wanted:
            key = wanted[a.class_name]
            found[key] = ",".join(sorted(filter(None, [found.get(key), ips.get(a.node_id)])))
    return found


def setup(spec, package: str) -> dict:
    from ray import serve

    from mlray.registry.models import Registry
    from mlray.serve.auth import KeyRing
    from mlray.serve.deploy import deploy
    from mlray.serve.routing import TrafficPlan

    on_this_node(spec)  # the worker's, whose loss the test is about
    registry = Registry(spec)
    registry.client.create_registered_model(spec.name)
    registry.register_package(package)  # a pinned location: registered with its manifest digest
    control.client(spec).admit("1", "user:test")
    # One proxy, on the head: two nodes of one machine cannot both listen on the serving port.
    serve.start(proxy_location="HeadOnly", http_options={"host": spec.serve.host, "port": spec.serve.port})
    deploy(spec, plan=TrafficPlan.only("1"), keys=KeyRing.for_serving(spec.serve))
    actor.start(spec)
    must(wait_until(lambda: ingress_running(spec.name) == 2, timeout=60), "both ingress replicas run")
    return {"placement": placement(spec)}


def on_this_node(spec) -> None:
    """Start the control plane and the monitor on this driver's node, as mlray would start them (mlray then finds them
    by name). Ray places an actor that needs no CPU on either node, so one placed on the head is started again."""
    from mlray.runtime import NAMESPACE

    here = ray.get_runtime_context().get_node_id()
    for kind, name, args in ((control.ControlPlaneActor, control.actor_name(spec), (spec,)),
                             (actor.DriftMonitor, actor.actor_name(spec.name), (spec, None))):
        for _ in range(12):
            handle = kind.options(name=name, namespace=NAMESPACE, lifetime="detached").remote(*args)
            ray.get(handle.__ray_ready__.remote())
            if _node_of(name) == here:
                break
            ray.kill(handle, no_restart=True)
            must(wait_until(lambda: _node_of(name) is None, timeout=30, every=0.2), f"{name}, placed on the head, is gone")


def _node_of(name: str) -> str | None:
    from ray.util.state import list_actors

    found = list_actors(filters=[("name", "=", name), ("state", "=", "ALIVE")], raise_on_missing_output=False)
    return found[0].node_id if found else None


def observe(spec, raylet_pid: int, rows: list[dict]) -> dict:
    url = f"http://{spec.serve.host}:{spec.serve.port}"
    lake = dataplane.lake_of(spec)
    before = control.client(spec).snapshot()
    timed_out: list[str] = []  # what never happened while the driver went on (the test asserts there is nothing)

    def waited(found, what: str):
        if not found:
            timed_out.append(what)
        return found

    with AnsweredLoad(url, rows[0], rows=rows) as load, AnsweredLoad(url, rows[0], rows=rows[100:]) as other:
        must(wait_until(lambda: len(read_reports(lake)) >= 1, timeout=90, every=1), "the monitor reports a window")
        time.sleep(3)  # fault timing: the node lost 3 s after the first window, into steady traffic
        windows_before, placed = len(read_reports(lake)), placement(spec)
        lose_node(raylet_pid)
        killed = time.time()
        healed = waited(wait_until(lambda: ingress_running(spec.name) == 2 and _alive(spec), timeout=120, every=0.5),
                        "two ingress replicas run and the control plane and the monitor answer again")
        healed_in = time.time() - killed if healed else None
        reported = waited(wait_until(lambda: len(read_reports(lake)) > windows_before + 1, timeout=120, every=1),
                          "the monitor reports two windows more after the loss")
        time.sleep(3)  # load pacing: 3 s more of traffic on the healed service (it must reach the log too)
    after = control.client(spec).snapshot()
    answered = set(load.answered) | set(other.answered)
    answered_at = load.answered_at | other.answered_at
    kept = {i for i in answered if not killed - 1.5 <= answered_at[i] <= killed + 0.5}  # what the lost replica buffered
    waited(wait_until(lambda: kept <= set(logged_counts(spec, answered)), timeout=60, every=2),
           "every answer the lost replica did not hold is in the inference log")
    logged = logged_counts(spec, answered)
    reports = sorted(read_reports(lake), key=lambda r: r.seq)
    return {"placed": placed, "placement_after": placement(spec), "healed_in": healed_in,
            "monitor_reported": bool(reported), "answered": len(answered),
            "failed": {str(k): v for k, v in (load.failed + other.failed).items()},
            "silence": longest_silence([load, other], killed), "kept": len(kept),
            "kept_logged": len(kept & set(logged)), "logged_twice": sum(n > 1 for n in logged.values()),
            "lost_buffered": len(answered - kept - set(logged)),
            "same_state": {k: before[k] == after[k] for k in ("plan", "keys", "revision", "packages")},
            "windows_chain": all(a.end == b.start for a, b in zip(reports, reports[1:]))
            and [r.seq for r in reports] == list(range(len(reports))), "timed_out": timed_out}


def lose_node(raylet_pid: int) -> None:
    """The node gone at once: its raylet's process group, and every process the raylet started (Ray's workers run in
    process groups of their own)."""
    import psutil

    raylet = psutil.Process(raylet_pid)
    doomed = [raylet, *raylet.children(recursive=True)]
    os.killpg(os.getpgid(raylet_pid), signal.SIGKILL)
    for process in doomed:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _alive(spec) -> bool:
    """The control plane and the monitor answer (restarted on the head by Ray)."""
    try:
        control.client(spec, attempts=1).snapshot()
        return actor.status(spec) is not None
    except Exception:  # noqa: BLE001 - not back yet
        return False


def main() -> None:
    mode, spec_path, extra, *rest = sys.argv[1:]
    ray.init(_node_ip_address=WORKER_IP if mode == "setup" else "127.0.0.1", namespace="mlray",
             logging_level="ERROR", log_to_driver=False)
    spec = load_spec(spec_path)
    try:
        if mode == "setup":
            result = setup(spec, extra)
        else:
            with open(rest[0]) as rows:
                result = observe(spec, int(extra), json.load(rows))
    except AssertionError as failed:  # a wait the rest stands on timed out: say which, and exit as below
        traceback.print_exc()
        print(f"{mode}: {failed}", file=sys.stderr, flush=True)
        os._exit(1)
    print(json.dumps(result, default=str), flush=True)
    os._exit(0)  # skip native destructors at exit (deltalake's runtime can abort a finished process there)


if __name__ == "__main__":
    main()
