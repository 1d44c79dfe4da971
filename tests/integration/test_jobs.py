"""The `ray job submit` entrypoint: in process, and through the real Jobs API of the test's Ray."""

import json
import runpy
import sys
import time
from pathlib import Path

import pytest
from helpers import wait_until

from mlray.lake.synthetic import generate_transactions, write_source_file

JOBS = Path(__file__).parents[2] / "jobs"
JOB = JOBS / "dataplane.py"


def job_main(name: str):
    """A jobs/ entrypoint's `main(argv)`, loaded the way `python jobs/<name>.py` runs it."""
    return runpy.run_path(str(JOBS / f"{name}.py"))["main"]


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
    finished = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    assert wait_until(lambda: client.get_job_status(job) in finished, timeout=240, every=1), "the job did not finish in time"
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs
    assert '"rows_landed": 400' in logs and '"passed": true' in logs


def test_every_stage_has_a_job_that_takes_a_spec():
    for stage in ("ingest", "validate", "train", "tune", "predict", "deploy", "canary", "monitor", "retrain", "keys"):
        with pytest.raises(SystemExit) as shown:
            job_main(stage)(["--help"])
        assert shown.value.code == 0


def test_validate_job_exits_1_on_a_failed_expectation_and_2_on_a_user_error(project, landing, capsys):
    spec = ["--spec", str(project.path)]
    assert job_main("ingest")([*spec, "--source", str(landing)]) == 0
    assert json.loads(capsys.readouterr().out)["rows_landed"] == 400
    strict = project.path.with_name("strict.yaml")  # the same project and lake, a stricter expectation
    strict.write_text(project.path.read_text().replace("min_rows: 10", "min_rows: 100000"))
    assert job_main("validate")(["--spec", str(strict)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is False and report["version"] == 1
    assert job_main("validate")([*spec]) == 0
    capsys.readouterr()
    assert job_main("validate")([*spec, "--table", "nowhere"]) == 2
    assert "nowhere" in capsys.readouterr().err
    with pytest.raises(SystemExit) as wrong_flag:
        job_main("validate")([*spec, "--versoin", "1"])
    assert wrong_flag.value.code == 2

