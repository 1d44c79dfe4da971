"""The lake (moto's S3 on 127.0.0.1) unreachable while requests flow: serving goes on, a killed ingress replica is
replaced meanwhile, memory stays flat, and the inference log catches up once the lake is back. Its own module: it
deploys its own project at `/`, so no other module's deployment may be up."""

import time

import pytest
from serving import KEY, AnsweredLoad, as_json_rows, ingress_running, logged_counts, raw_rows, replica_names, wait_until

pytestmark = pytest.mark.slow


def _moto_server(endpoint: str):
    """The process of the suite's local S3 (moto's server) listening at `endpoint`."""
    import psutil

    port = endpoint.rsplit(":", 1)[1]
    return next(p for p in psutil.process_iter(["cmdline"])
                if "moto_server" in " ".join(p.info["cmdline"] or []) and port in (p.info["cmdline"] or []))


def _ingress_rss(app: str) -> list[int]:
    import psutil
    from ray.util.state import list_actors

    replicas = list_actors(filters=[("class_name", "=", f"ServeReplica:{app}:ingress"), ("state", "=", "ALIVE")])
    return sorted(psutil.Process(replica.pid).memory_info().rss for replica in replicas)


def test_the_lake_unreachable_for_60_s_under_load_serving_goes_on_and_the_log_catches_up(
        s3_endpoint, starter_text, small_model, tmp_path):
    """The lake on (moto's) S3, its server frozen (SIGSTOP) for 60 s while requests flow through two ingress replicas:
    every request is answered; one replica killed 20 s in is replaced while the lake is still frozen (a constructor
    does no lake I/O); the survivor's memory stays flat (its buffers are bounded); once the lake is back every answered
    request is in the log, each once, but for what the killed replica had buffered."""
    import ray
    from helpers import free_port
    from ray import serve
    from test_object_store import s3_spec

    from mlray.registry.models import Registry
    from mlray.runtime import NAMESPACE
    from mlray.serve import control
    from mlray.serve.auth import KeyRing, hash_key
    from mlray.serve.deploy import deploy
    from mlray.serve.routing import TrafficPlan

    serving = (f"serve:\n  port: {free_port()}\n  log_flush_s: 0.5\n  api_keys: ['{hash_key(KEY)}']\n"
               "  autoscaling: {min_replicas: 2, max_replicas: 2}\n")
    spec = s3_spec(s3_endpoint, starter_text.replace("name: card-fraud", "name: lake-outage", 1), tmp_path, serving)
    small = Registry(small_model[0])
    package = small.artifact_uri(small.model_name, "1")
    registry = Registry(spec)
    registry.client.create_registered_model(spec.name)
    registry.register_package(package)
    control.client(spec).admit("1", "user:test")
    url = deploy(spec, plan=TrafficPlan.only("1"), keys=KeyRing.for_serving(spec.serve)).url
    row = as_json_rows(raw_rows(small_model[0], 1))[0]
    lake = _moto_server(s3_endpoint)
    try:
        assert wait_until(lambda: ingress_running(spec.name) == 2, timeout=60)
        with AnsweredLoad(url, row) as load:
            time.sleep(5)  # fault timing: the lake frozen 5 s into steady traffic
            frozen_at, answered_before = time.time(), len(load.answered)
            lake.suspend()
            try:
                time.sleep(20)  # fault timing: a replica killed 20 s into the outage
                first = replica_names(spec.name)
                ray.kill(ray.get_actor(first[0], namespace="serve"), no_restart=False)
                killed = time.time()
                replaced = wait_until(lambda: ingress_running(spec.name) == 2 and first[0] not in replica_names(spec.name)
                                      and set(replica_names(spec.name)) - set(first), timeout=35, every=0.5)
                replaced_in = time.time() - killed
                before_rss = _ingress_rss(spec.name)
                time.sleep(max(0.0, frozen_at + 60 - time.time()))  # fault timing: the outage lasts 60 s
                during = len(load.answered) - answered_before
                after_rss = _ingress_rss(spec.name)
            finally:
                lake.resume()
            back = time.monotonic()
            time.sleep(2)  # load pacing: 2 s of traffic once the lake is back (it must reach the log too)
        answered = set(load.answered)
        buffered = {i for i in answered if frozen_at - 1.5 <= load.answered_at[i] <= killed + 0.5}  # the victim's too
        kept = answered - buffered
        assert wait_until(lambda: kept <= set(logged_counts(spec, answered)), timeout=180, every=2), \
            f"{len(kept - set(logged_counts(spec, answered)))} answered requests never reached the log"
        caught_up = time.monotonic() - back
        logged = logged_counts(spec, answered)
        print(f"\nthe lake unreachable 60 s under load, two ingress replicas: {during} requests answered meanwhile, "
              f"{sum(load.failed.values())} failed {dict(load.failed)}; a replica killed 20 s in was replaced in "
              f"{replaced_in:.1f} s with the lake still frozen; ingress RSS {[r // 2**20 for r in before_rss]} MiB "
              f"after the kill, {[r // 2**20 for r in after_rss]} MiB at the end; the log caught up {caught_up:.0f} s "
              f"after the lake came back: {len(logged)} of {len(answered)} answered requests logged, none twice; "
              f"{len(answered) - len(logged)} of the {len(buffered)} answered before the kill were in the killed "
              "replica's buffer")
        assert replaced, "the killed ingress replica was not replaced while the lake was frozen"
        assert sum(load.failed.values()) <= 0.001 * len(answered) and during > 100
        assert all(n == 1 for n in logged.values())
        assert max(after_rss) < 1.2 * max(before_rss)
    finally:
        serve.shutdown()  # all of Serve: the next module's Serve listens on its own port
        ray.kill(ray.get_actor(control.actor_name(spec), namespace=NAMESPACE))
