"""The drift monitor on served traffic: false alarms, each kind of shift, and what labels show (in process); a
killed monitor actor resumes exactly where it stopped; one job per incident, however often it is triggered."""

import threading
import time
from datetime import timedelta

import pytest
import ray
from helpers import TRAINED
from projects import make_project
from serving import scraped_metrics, wait_until
from traffic import Traffic

from mlray import dataplane
from mlray.incidents import Incidents, submission_id
from mlray.lake.synthetic import Shift
from mlray.monitor import actor, jobs
from mlray.monitor.watch import Monitor
from mlray.spec import starter_spec
from mlray.window_reports import read_reports

WINDOW = 500
MONITOR = f"""
monitor:
  window_rows: {WINDOW}
  min_window_rows: 100
  window: 1h
  poll_interval: 0.3s
  min_labels: 200
  min_class_labels: 15
  quality_rows: 1500
  retrain: {{mode: approval, drifted_windows: 2, of_windows: 3, cooldown: 1h}}
"""


@pytest.fixture(scope="module")
def champion(ray_session, tmp_path_factory):
    """A champion trained on 20,000 transactions (its reference sample: 1,000 of them), good enough for its scores to
    tell fraud apart (a prior shift moves them)."""
    from mlray.training import train as train_and_admit

    spec = make_project(tmp_path_factory.mktemp("monitored"), starter_spec("monitored"), TRAINED + MONITOR, rows=20000, seed=5)
    assert train_and_admit(spec).decision == "champion"
    return spec


@pytest.fixture
def fresh(champion, tmp_path):
    """The champion's project with an empty lake of its own for serving's tables and the monitor's state."""
    from mlray.lake.schema import arrow_schema

    platform = champion.platform.model_copy(update={"lake_root": str(tmp_path / "lake")})
    spec = champion.model_copy(update={"platform": platform})
    dataplane.lake_of(spec).create("transactions", arrow_schema(spec.train_table))
    return spec


def watching(spec) -> Monitor:
    """A monitor in this process with its checkpoint written: it watches the traffic sent from now on."""
    monitor = Monitor(spec)
    monitor.status()
    return monitor


def verdicts(spec):
    return [r.verdict for r in sorted(read_reports(dataplane.lake_of(spec)), key=lambda r: r.seq)]


def test_in_distribution_traffic_rarely_alarms_while_upkeep_compacts_the_log(fresh):
    tidy = fresh.model_copy(update={"monitor": fresh.monitor.model_copy(update={"compact_every": timedelta(0)})})
    monitor, traffic = watching(tidy), Traffic(tidy)
    lake = dataplane.lake_of(tidy)
    sent = 0
    for batch in range(8):
        for part in range(5):  # five flushes per step: small files for the upkeep to compact
            sent += traffic.send(WINDOW, seed=100 + 5 * batch + part)
        monitor.step()
    found = verdicts(tidy)
    assert len(found) >= 40 and sum(r.rows for r in read_reports(lake)) == sent
    assert found.count("drift") <= 0.05 * len(found), found
    assert Incidents(lake).all() == []
    operations = [c["operation"] for c in lake.history("inference_log")]
    assert "OPTIMIZE" in operations and len(lake.open("inference_log").file_uris()) < 8


@pytest.mark.parametrize("shift, within", [(Shift(covariate=1.0), 2), (Shift(prior=3.0), 3)])
def test_a_shift_is_detected_within_a_few_windows(fresh, shift, within):
    monitor, traffic = watching(fresh), Traffic(fresh)
    traffic.send(3 * WINDOW, seed=200)
    monitor.step()
    assert verdicts(fresh) == ["ok"] * 3
    traffic.send(within * WINDOW, seed=201, shift=shift)
    monitor.step()
    reports = sorted(read_reports(dataplane.lake_of(fresh)), key=lambda r: r.seq)[3:]
    assert any(r.verdict == "drift" for r in reports), reports
    if shift.prior:
        assert any(r.score_drift for r in reports), "a prior shift moves the score distribution"
    else:
        assert any(len(r.drifted) >= 2 for r in reports)


def test_a_concept_shift_shows_in_live_quality_not_in_the_inputs(fresh):
    monitor, traffic = watching(fresh), Traffic(fresh)
    traffic.send(3 * WINDOW, seed=300, labelled=1.0)
    monitor.step()
    before = read_reports(dataplane.lake_of(fresh))[0]
    traffic.send(2 * WINDOW, seed=301, shift=Shift(concept=1.0), labelled=1.0)
    monitor.step()
    traffic.send(WINDOW, seed=302, shift=Shift(concept=1.0), labelled=1.0)
    monitor.step()
    after = read_reports(dataplane.lake_of(fresh))[0]
    assert before.quality_drop is not None and after.quality_drop > before.quality_drop + 0.1
    assert after.quality_drop > fresh.monitor.retrain.max_quality_drop
    incidents = Incidents(dataplane.lake_of(fresh)).all()
    assert [i.cause for i in incidents] == ["quality"] and incidents[0].status == "awaiting_approval"


def failing_retrain(spec):
    """Automatic retraining whose job fails at once (its landing folder is missing): one job, then an alert."""
    retrain = spec.monitor.retrain.model_copy(update={"mode": "auto", "source": "/nonexistent/landing"})
    return spec.model_copy(update={"monitor": spec.monitor.model_copy(update={"retrain": retrain})})


def jobs_of(incident_prefix: str) -> list[str]:
    """The submission ids of the Ray jobs for incidents whose id starts with `incident_prefix`."""
    return [j.submission_id for j in jobs.client().list_jobs()
            if (j.metadata or {}).get("mlray.incident", "").startswith(incident_prefix)]


def test_a_killed_monitor_resumes_from_its_checkpoint_and_submits_no_second_job(fresh):
    spec = failing_retrain(fresh)
    lake = dataplane.lake_of(spec)
    traffic = Traffic(spec)
    handle = actor.start(spec)
    try:
        sent = 0
        for batch in range(6):
            sent += traffic.send(WINDOW, seed=400 + batch, shift=Shift(covariate=1.0 if batch >= 2 else 0.0))
            if batch in (1, 3):
                time.sleep(0.5)  # fault timing: the kill lands while the monitor reads the batch just sent
                ray.kill(handle, no_restart=False)  # it restarts by itself
        assert wait_until(lambda: len(read_reports(lake)) >= 6, timeout=180, every=1), read_reports(lake)
        reports = sorted(read_reports(lake), key=lambda r: r.seq)
        assert [r.seq for r in reports] == list(range(6)) and sum(r.rows for r in reports) == sent
        assert all(a.end == b.start for a, b in zip(reports, reports[1:])), "windows must chain"
        print(f"\nmonitor killed twice mid-stream: windows {[r.seq for r in reports]}, "
              f"{sum(r.rows for r in reports)} of {sent} rows checked, each once")
        assert "mlray_drift_p_value" in scraped_metrics("mlray_drift_p_value", "mlray_drift_windows")
        incidents = Incidents(lake)
        assert wait_until(lambda: [i.status for i in incidents.all()] == ["failed"], timeout=120, every=1), \
            incidents.all()
        assert len(jobs_of(Monitor(spec).status()["epoch"])) == 1
    finally:
        actor.stop(spec)


def test_two_triggers_of_one_incident_at_once_give_one_job(fresh):
    spec = failing_retrain(fresh)
    incident = f"race-{time.time_ns()}"
    Incidents(dataplane.lake_of(spec)).record(incident, "open", "test", cause="drift")
    client, results = jobs.client(), []
    threads = [threading.Thread(target=lambda: results.append(jobs.submit_retrain(client, spec, incident)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(submitted for _, submitted in results) == [False, True]
    assert {sid for sid, _ in results} == {submission_id(spec.name, incident)}
    assert jobs_of(incident) == [submission_id(spec.name, incident)]


def test_the_cli_reports_drift_and_approving_an_incident_submits_its_job(fresh, tmp_path):
    import json

    from typer.testing import CliRunner

    from mlray.cli import app

    env = {"MLRAY_PLATFORM__LAKE_ROOT": fresh.platform.lake_root}
    retrain = fresh.monitor.retrain.model_copy(update={"source": "/nonexistent/landing"})  # its job fails at once
    spec = fresh.model_copy(update={"monitor": fresh.monitor.model_copy(update={"retrain": retrain})})
    monitor, traffic = watching(spec), Traffic(spec)
    traffic.send(2 * WINDOW, seed=500)
    traffic.send(3 * WINDOW, seed=501, shift=Shift(covariate=1.0))
    monitor.step()

    def cli(*args):
        result = CliRunner().invoke(app, [*args, "--spec", str(fresh.path), "--json"], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    report = cli("drift", "report", "--out", str(tmp_path / "pictures"))
    assert [w["seq"] for w in report["windows"]] == [4, 3, 2, 1, 0] and report["windows"][0]["verdict"] == "drift"
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == ["p-values.png", "quality-precision.png",
                                                                           "quality-roc_auc.png", "window-4.png"]
    [incident] = cli("incidents", "list")
    assert incident["status"] == "awaiting_approval" and incident["cause"] == "drift"
    assert cli("incidents", "approve", incident["incident_id"])["status"] == "approved"
    monitor.step()  # the monitor submits the approved incident's job, which fails: an alert, and the incident ends
    assert wait_until(lambda: cli("incidents", "show", incident["incident_id"])["status"] == "failed", timeout=120)
    assert jobs_of(incident["incident_id"]) == [submission_id(spec.name, incident["incident_id"])]
    again = CliRunner().invoke(app, ["incidents", "approve", incident["incident_id"], "--spec", str(fresh.path)], env=env)
    assert again.exit_code == 2 and "is failed, not awaiting approval" in again.output
