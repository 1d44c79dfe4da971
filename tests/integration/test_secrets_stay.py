"""Secrets stay where they belong. A sentinel sits in every secret field of the spec (object-store credentials, the
tracking URI's password, the webhook's token) and in MLRAY_API_KEYS; then train, tune, a deploy job, a retraining job
that fails while MLflow is down (and alerts through a webhook that fails) run. Not one sentinel is then found in the
MLflow store, a model package, a job's submission, the lake's tables, Ray's session logs, an HTTP answer or what the
driver printed (MLflow prints a link to each run, with the tracking URI whole, unless told not to)."""

import os
import sys
import time
from pathlib import Path

import pytest
import requests
from helpers import free_port, wait_until
from projects import make_project
from tracking_server import mlflow_server, stop

pytestmark = pytest.mark.slow

MARK = "SENTINEL-7f3a9c"  # in every secret below: one string to look for
LAKE_SECRET, MLFLOW_PASSWORD = f"lake-{MARK}", f"pw-{MARK}"
HOOK_TOKEN, API_KEY = f"hook-{MARK}", f"api-key-{MARK}-0123456789abcdefghij"
REPO = Path(__file__).parents[2]
SPEC = """
train:
  epochs: 1
  batch_size: 256
  cpus_per_worker: 0.5
  early_stopping: null
tune:
  trials: 2
  max_concurrent: 1
  space:
    train.learning_rate: {{choice: [0.001, 0.01]}}
serve:
  port: {port}
  log_flush_s: 0.5
monitor:
  alert_webhook: http://127.0.0.1:9/hooks/{token}?token={token}
"""


def _project(folder, starter_text, tracking_port: int):
    folder.mkdir()
    text = (starter_text.replace("name: card-fraud", "name: sealed", 1)
            .replace("storage_options: {}", f"storage_options: {{MLRAY_TEST_CREDENTIAL: {LAKE_SECRET}}}")
            .replace("mlflow_tracking_uri: null",
                     f"mlflow_tracking_uri: http://alice:{MLFLOW_PASSWORD}@127.0.0.1:{tracking_port}"))
    return make_project(folder, text, SPEC.format(port=free_port(), token=HOOK_TOKEN), rows=2000)


def _wait_for_job(client, job_id: str) -> str:
    from ray.job_submission import JobStatus

    ended = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    assert wait_until(lambda: client.get_job_status(job_id) in ended, timeout=300, every=1), f"{job_id} never ended"
    return str(client.get_job_status(job_id).value)


def _files_holding(folder: Path, needle: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _lake_rows_holding(lake, needle: str) -> list[str]:
    """Each table of the lake read whole (Parquet pages are compressed: a byte search would miss them)."""
    return [info.name for info in lake.list() if needle in str(lake.read(info.name).to_pylist())]


def test_no_secret_reaches_a_store_a_job_a_log_or_an_answer(tmp_path, starter_text, monkeypatch, ray_session, capfd):
    import ray
    from ray import serve
    from ray.job_submission import JobSubmissionClient

    from mlray import dataplane
    from mlray.incidents import Incidents
    from mlray.monitor.jobs import RayJobs
    from mlray.runtime import NAMESPACE
    from mlray.serve import control
    from mlray.serve.auth import KeyRing
    from mlray.serve.deploy import deploy
    from mlray.training import train, tune

    serve.shutdown()  # a Serve an earlier module started would keep its own HTTP port, not this project's
    port = free_port()
    log = (tmp_path / "mlflow-server.log").open("w")
    server = mlflow_server(tmp_path / "tracking", port, log)
    spec = _project(tmp_path / "project", starter_text, port)
    lake = dataplane.lake_of(spec)
    jobs = JobSubmissionClient(f"http://{ray_session.dashboard_url}")
    answers: list[str] = []
    try:
        assert train(spec).decision == "champion"
        tune(spec)
        monkeypatch.setenv("MLRAY_API_KEYS", API_KEY)  # the deploying shell's key: hashed there, stored as a hash
        url = deploy(spec, keys=KeyRing.for_serving(spec.serve)).url
        monkeypatch.delenv("MLRAY_API_KEYS")
        deploy_job = jobs.submit_job(entrypoint=f"{sys.executable} {REPO / 'jobs' / 'deploy.py'} --spec {spec.path}",
                                     submission_id=f"sealed-deploy-{time.time_ns()}")
        assert _wait_for_job(jobs, deploy_job) == "SUCCEEDED", jobs.get_job_logs(deploy_job)[-3000:]
        key = {"Authorization": f"Bearer {API_KEY}"}
        for path in ("/v1/health", "/v1/models", "/openapi.json"):
            answers += [requests.get(f"{url}{path}", headers=key, timeout=30).text,
                        requests.get(f"{url}{path}", timeout=30).text]
        answers.append(requests.post(f"{url}/v1/predict", json={"rows": [{"amount": "x"}]}, headers=key,
                                     timeout=30).text)

        stop(server)  # the retraining job then fails on the registry, and its alert on the webhook
        Incidents(lake).record("leak-check", "open", "test", cause="drift")
        retrain_job, _ = RayJobs(spec).submit("leak-check")
        assert _wait_for_job(jobs, retrain_job) == "FAILED"
        assert Incidents(lake).get("leak-check").status == "failed"
    finally:
        serve.shutdown()  # first: a live ingress would start its project's control plane again
        ray.kill(ray.get_actor(control.actor_name(spec), namespace=NAMESPACE))
        stop(server)
        log.close()

    found = {
        "the MLflow store": _files_holding(tmp_path / "tracking", MARK.encode()),
        "the lake's tables": _lake_rows_holding(lake, MARK),
        "the lake's files": _files_holding(Path(spec.platform.lake_uri), MARK.encode()),
        "a job's submission": [j.submission_id for j in jobs.list_jobs()
                               if MARK in f"{j.entrypoint} {j.runtime_env} {j.metadata}"],
        "Ray's session logs": _files_holding(Path(ray_session.address_info["session_dir"]) / "logs", MARK.encode()),
        "an HTTP answer": [a[:200] for a in answers if MARK in a],
        "what this driver printed": [line[:200] for line in "".join(capfd.readouterr()).splitlines() if MARK in line],
    }
    print(f"\nsentinels looked for in: {', '.join(found)}; found in: {[k for k, v in found.items() if v] or 'none'}")
    assert {k: v for k, v in found.items() if v} == {}
    assert os.environ.get("MLRAY_API_KEYS") is None
