"""Driver of the autoscaling test, run as its own process on a second Ray cluster on this machine whose autoscaler
runs Ray's fake multi-node provider (the test's own process is joined to the suite's Ray). It prints one JSON line.

    RAY_ADDRESS=HEAD:PORT python autoscaling_driver.py STORAGE IDLE_S SPEC PACKAGE ROWS

A Ray Tune sweep that needs more CPUs than the head has, then GPU work on a cluster whose GPU nodes start at 0 and
whose GPUs (fake) torch cannot use; between them, the nodes are left idle until the autoscaler removes them. Last,
the project of SPEC is served with PACKAGE as its champion and loaded (ROWS: a JSON file of request rows) until Serve
adds ingress replicas, then left until it removes them. A thread records each node's launch and termination as Ray's
node table shows them.
"""

import json
import sys
import threading
import time

import ray
from helpers import wait_until
from serving import AnsweredLoad, ingress_running

SWEEP_TRIALS, TRIAL_CPUS, TRIAL_SECONDS = 4, 4, 8  # 16 CPUs at once: two CPU workers of 8


def node_type(resources: dict) -> str:
    """The launcher's node type a node of the fake cluster stands for, by what it offers."""
    return "gpu_workers" if resources.get("GPU") else "cpu_workers" if resources.get("CPU") else "head"


class NodeWatch(threading.Thread):
    """Ray's node table, polled: each node's launch and termination, in seconds since the watch began."""

    def __init__(self):
        super().__init__(daemon=True)
        self.started, self.events, self.alive, self.stop = time.monotonic(), [], {}, threading.Event()

    def now(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def run(self):
        while not self.stop.is_set():
            seen = {n["NodeID"]: node_type(n["Resources"]) for n in ray.nodes() if n["Alive"]}
            for node, kind in seen.items() - self.alive.items():
                self.events.append({"t": self.now(), "event": "launch", "type": kind, "node": node[-8:]})
            for node, kind in self.alive.items() - seen.items():
                self.events.append({"t": self.now(), "event": "terminate", "type": kind, "node": node[-8:]})
            self.alive = seen
            self.stop.wait(0.5)

    def count(self, kind: str) -> int:
        return sum(k == kind for k in self.alive.values())

    def gone_after(self, kind: str, since: float, timeout: float) -> float | None:
        """Seconds from `since` until no node of `kind` is left (None: some still ran after `timeout`)."""
        return wait_until(lambda: self.count(kind) == 0 and round(self.now() - since, 1), timeout=timeout)

    def peak(self, kind: str, since: float) -> int:
        running = peak = 0
        for e in self.events:
            if e["type"] == kind:
                running += 1 if e["event"] == "launch" else -1
                if e["t"] >= since:
                    peak = max(peak, running)
        return peak


def trial(config):
    from ray import tune

    time.sleep(TRIAL_SECONDS)
    tune.report({"trial": config["trial"]})


def sweep(storage: str) -> int:
    """A sweep whose trials together need more CPUs than the head has (none): the trials that finished."""
    from ray import tune

    tuner = tune.Tuner(tune.with_resources(trial, {"CPU": TRIAL_CPUS}),
                       param_space={"trial": tune.grid_search(list(range(SWEEP_TRIALS)))},
                       run_config=tune.RunConfig(name="autoscaled-sweep", storage_path=storage, verbose=0))
    return sum(not r.error for r in tuner.fit())


def refused_gpu_runs() -> dict:
    """mlray's check before a GPU run, with `use_gpu: true` (which starts a GPU node) and then `auto` (which sees it)."""
    from mlray.errors import UserError
    from mlray.train.execution import require_usable_gpus, use_gpu

    refused = {}
    for setting in (True, "auto"):
        try:
            if use_gpu(setting):
                require_usable_gpus()
            refused[str(setting)] = None
        except UserError as error:
            refused[str(setting)] = str(error)
    return refused


@ray.remote(num_cpus=1)  # the head has none: a CPU worker
def submitted_from_a_worker(spec_file: str, submission_id: str) -> dict:
    """What the drift monitor does on whatever node it runs on (`RayJobs` as `actor.start` gives it: no address):
    submit a job and follow it, with the node it ran on."""
    from mlray.monitor.jobs import TERMINAL, RayJobs, job_status
    from mlray.spec import load_spec

    jobs = RayJobs(load_spec(spec_file)).client()
    jobs.submit_job(entrypoint="python -c 'print(42)'", submission_id=submission_id)
    status = wait_until(lambda: (now := job_status(jobs, submission_id)) in TERMINAL and now, timeout=60)
    return {"node": ray.get_runtime_context().get_node_id(), "status": status}


def jobs_api_from_a_worker(spec_file: str) -> dict:
    """A job submitted and followed from a CPU worker: the Jobs API calls ran on the head node."""
    from ray.util.state import list_tasks

    seen = ray.get(submitted_from_a_worker.remote(spec_file, "from-a-worker"))
    head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"])
    calls = list_tasks(filters=[("func_or_class_name", "=", "_call_jobs_api")], raise_on_missing_output=False)
    return {"status": seen["status"], "caller_on_head": seen["node"] == head,
            "calls": len(calls), "calls_on_head": sum(c.node_id == head for c in calls)}


def served_under_load(spec_file: str, package: str, rows: list[dict], watch: NodeWatch) -> dict:
    """The project served with its models in the ingress (autoscaled by its spec), loaded by 8 clients until Serve
    runs more ingress replicas, then left idle until it runs its minimum again."""
    from ray import serve

    from mlray.registry.models import Registry
    from mlray.serve import control
    from mlray.serve.auth import KeyRing
    from mlray.serve.deploy import deploy
    from mlray.serve.routing import TrafficPlan
    from mlray.spec import load_spec

    spec = load_spec(spec_file)
    scaling = spec.serve.autoscaling
    registry = Registry(spec)
    registry.client.create_registered_model(spec.name)
    registry.register_package(package)
    control.client(spec).admit("1", "user:test")
    began = watch.now()
    serve.start(proxy_location="HeadOnly", http_options={"host": spec.serve.host, "port": spec.serve.port})
    deploy(spec, plan=TrafficPlan.only("1"), keys=KeyRing.for_serving(spec.serve))
    out = {"deployed_s": round(watch.now() - began, 1), "replicas_before": ingress_running(spec.name),
           "jobs_api": jobs_api_from_a_worker(spec_file)}
    loads = [AnsweredLoad(f"http://{spec.serve.host}:{spec.serve.port}", rows[0], rows=rows) for _ in range(8)]
    loaded = watch.now()
    for load in loads:
        load.__enter__()
    try:
        peak = wait_until(lambda: ingress_running(spec.name) >= scaling.max_replicas and ingress_running(spec.name),
                          timeout=120)
        out["replicas_peak"] = peak or ingress_running(spec.name)
        out["scaled_up_s"] = round(watch.now() - loaded, 1) if peak else None
    finally:
        for load in loads:
            load.__exit__(None, None, None)
    out["answered"] = sum(len(load.answered) for load in loads)
    out["failed"] = sum(sum(load.failed.values()) for load in loads)
    quiet = watch.now()
    down = wait_until(lambda: ingress_running(spec.name) == scaling.min_replicas, timeout=scaling.downscale_delay_s + 90)
    out["scaled_down_s"] = round(watch.now() - quiet, 1) if down else None
    out["cpu_workers_serving"] = watch.peak("cpu_workers", began)
    serve.shutdown()
    return out


def main(storage: str, idle_s: float, spec_file: str, package: str, rows: list[dict]) -> dict:
    ray.init(logging_level="ERROR", log_to_driver=False)
    watch = NodeWatch()
    watch.start()
    out = {"cpus": ray.cluster_resources().get("CPU", 0)}

    began = watch.now()
    out["trials_done"] = sweep(storage)
    out["sweep_s"] = round(watch.now() - began, 1)
    out["cpu_peak"] = watch.peak("cpu_workers", began)
    out["cpu_gone_s"] = watch.gone_after("cpu_workers", watch.now(), timeout=idle_s + 90)

    began = watch.now()
    out["refused"] = refused_gpu_runs()
    out["gpu_peak"] = watch.peak("gpu_workers", began)
    out["gpu_gone_s"] = watch.gone_after("gpu_workers", watch.now(), timeout=idle_s + 90)

    out["serve"] = served_under_load(spec_file, package, rows, watch)
    watch.stop.set()
    watch.join()
    out["events"] = watch.events
    return out


if __name__ == "__main__":
    with open(sys.argv[5]) as rows:
        print(json.dumps(main(sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], json.load(rows))))
