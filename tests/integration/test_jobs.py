"""The `ray job submit` entrypoint: in process, and through the real Jobs API of the test's Ray."""

import json
import runpy
import sys
import time
from pathlib import Path

import pytest

from mlray.lake.synthetic import generate_transactions, write_source_file

JOB = Path(__file__).parents[2] / "jobs" / "dataplane.py"


@pytest.fixture
def landing(tmp_path):
    write_source_file(generate_transactions(400, seed=31), tmp_path / "landing" / "a.parquet")
    return tmp_path / "landing"


def test_job_ingests_validates_and_fits(project, landing, capsys):
    main = runpy.run_path(str(JOB))["main"]
    assert main(["--spec", str(project.path), "--source", str(landing)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ingest"]["rows_landed"] == 400
    assert summary["validation"]["passed"] is True
    assert summary["features"]["table_version"] == 1
    assert main(["--spec", str(project.path.parent / "missing.yaml")]) == 2


def test_job_through_ray_job_submit(ray_session, project, landing):
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(f"http://{ray_session.dashboard_url}")
    job = client.submit_job(entrypoint=f"{sys.executable} {JOB} --spec {project.path} --source {landing}",
                            submission_id=f"mlray-test-{time.time_ns()}")
    deadline = time.time() + 240
    while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, "the job did not finish in time"
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs
    assert '"rows_landed": 400' in logs and '"passed": true' in logs
