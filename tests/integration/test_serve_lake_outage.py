"""The lake (moto's S3 on 127.0.0.1) unreachable while requests flow: serving goes on, memory stays flat, and the
inference log catches up once the lake is back. Its own module: it deploys its own project at `/`, so no other
module's deployment may be up."""

import time

import pytest
from serving import KEY, AnsweredLoad, as_json_rows, logged_counts, raw_rows, wait_until

pytestmark = pytest.mark.slow


def _moto_server(endpoint: str):
    """The process of the suite's local S3 (moto's server) listening at `endpoint`."""
    import psutil

    port = endpoint.rsplit(":", 1)[1]
    return next(p for p in psutil.process_iter(["cmdline"])
                if "moto_server" in " ".join(p.info["cmdline"] or []) and port in (p.info["cmdline"] or []))


def _ingress_rss(app: str) -> int:
    import psutil
    from ray.util.state import list_actors

    [replica] = list_actors(filters=[("class_name", "=", f"ServeReplica:{app}:ingress"), ("state", "=", "ALIVE")])
    return psutil.Process(replica.pid).memory_info().rss


def test_the_lake_unreachable_for_60_s_under_load_serving_goes_on_and_the_log_catches_up(
        s3_endpoint, starter_text, small_model, tmp_path):
    """The lake on (moto's) S3, its server frozen (SIGSTOP) for 60 s while requests flow: every request is answered,
    the ingress's memory stays flat (its buffers are bounded), and once the lake is back every answered request is in
    the log, each once."""
    import ray
    from helpers import free_port
    from ray import serve
    from test_object_store import s3_spec

    from mlray.registry.models import Registry
    from mlray.serve import control
    from mlray.serve.auth import KeyRing, hash_key
    from mlray.serve.deploy import deploy
    from mlray.serve.routing import TrafficPlan

    serving = (f"serve:\n  port: {free_port()}\n  log_flush_s: 0.5\n  api_keys: ['{hash_key(KEY)}']\n")
    spec = s3_spec(s3_endpoint, starter_text.replace("name: card-fraud", "name: lake-outage", 1), tmp_path, serving)
    small = Registry(small_model[0])
    package = small.artifact_uri(small.model_name, "1")
    registry = Registry(spec)
    registry.client.create_registered_model(spec.name)
    registry.client.create_model_version(spec.name, package)
    registry.set_alias("champion", "1")
    url = deploy(spec, plan=TrafficPlan.only("1"), keys=KeyRing.for_serving(spec.serve)).url
    row = as_json_rows(raw_rows(small_model[0], 1))[0]
    lake = _moto_server(s3_endpoint)
    try:
        with AnsweredLoad(url, row) as load:
            time.sleep(5)
            before_rss, frozen_at = _ingress_rss(spec.name), len(load.answered)
            lake.suspend()
            try:
                time.sleep(60)
                during = len(load.answered) - frozen_at
                after_rss = _ingress_rss(spec.name)
            finally:
                lake.resume()
            back = time.monotonic()
            time.sleep(2)
        answered = set(load.answered)
        assert wait_until(lambda: set(logged_counts(spec, answered)) == answered, timeout=180, every=2), \
            f"{len(answered - set(logged_counts(spec, answered)))} answered requests never reached the log"
        caught_up = time.monotonic() - back
        logged = logged_counts(spec, answered)
        print(f"\nthe lake unreachable 60 s under load: {during} requests answered meanwhile, "
              f"{sum(load.failed.values())} failed {dict(load.failed)}; ingress RSS {before_rss / 2**20:.0f} MiB before, "
              f"{after_rss / 2**20:.0f} MiB after 60 s; the log caught up {caught_up:.0f} s after the lake came back: "
              f"{len(logged)} of {len(answered)} answered requests logged, none twice")
        assert not load.failed and during > 100
        assert all(n == 1 for n in logged.values())
        assert after_rss < 1.2 * before_rss
    finally:
        serve.shutdown()  # all of Serve: the next module's Serve listens on its own port
        ray.kill(ray.get_actor(control.actor_name(spec.name), namespace=control.NAMESPACE))
