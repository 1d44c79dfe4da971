"""The main job: `mlray demo --fast` runs the whole loop on the suite's Ray — data → features → training and a sweep →
serving → labelled traffic → drift → the monitor's incident → one retraining job through the Jobs API → canary →
promotion — and is judged by what it leaves behind: tables, registered versions and aliases, the incident's events,
the job, the lineage and the audit log."""

import pytest
from helpers import free_port, wait_until
from typer.testing import CliRunner

from mlray import dataplane
from mlray.cli import app
from mlray.spec import load_spec

LOOP = ["incident.open", "retrain.submit", "retrain.running", "retrain.retrained", "canary.start", "canary.promote",
        "retrain.promoted"]


@pytest.mark.slow
def test_demo_closes_the_loop_and_leaves_a_promoted_retrained_champion(tmp_path):
    from ray import serve

    from mlray.audit import AuditLog
    from mlray.incidents import Incidents
    from mlray.monitor import jobs
    from mlray.registry.models import Registry
    from mlray.window_reports import read_reports

    folder = tmp_path / "demo"
    serve.shutdown()  # a Serve an earlier test started would keep its own HTTP port, not the demo's
    result = CliRunner().invoke(app, ["demo", "--dir", str(folder), "--fast", "--port", str(free_port()),
                                      "--name", "demo-loop"], catch_exceptions=False)
    assert result.exit_code == 0, result.output[-5000:]
    spec = load_spec(folder / "mlray.yaml")
    lake, registry = dataplane.lake_of(spec), Registry(spec)

    # the data plane: each landing file once, malformed rows quarantined, the drifted files landed by the job
    assert lake.read(f"{spec.data.train_table}_quarantine").num_rows > 0
    assert lake.latest_version(spec.data.train_table) == 4  # three landing files, then the upstream drift

    # the monitor: the calm windows raised nothing (no input column, no score drift: the reference has seen every
    # weekday and is matched to the windows' hours), then drifted ones opened exactly one incident, which ended promoted
    reports = read_reports(lake)
    calm = list(reversed(reports))[:2]
    print("\ncalm windows:", [(r.seq, r.verdict, r.drifted, r.score_p_value, r.context) for r in calm])
    assert [(r.verdict, r.drifted, r.score_drift) for r in calm] == [("ok", [], False)] * 2, calm
    assert any(r.verdict == "drift" for r in reports)
    (incident,) = Incidents(lake).all()
    assert incident.cause == "drift" and incident.status == "promoted", incident
    assert [e.status for e in incident.events] == ["open", "submitted", "running", "retrained", "promoted"]

    # one retraining job through the Jobs API, and it succeeded
    def jobs_of_incident():
        return [j for j in jobs.client().list_jobs() if (j.metadata or {}).get("mlray.incident") == incident.incident_id]

    assert wait_until(lambda: all(j.status.value == "SUCCEEDED" for j in jobs_of_incident()), timeout=60)
    (job,) = jobs_of_incident()
    assert job.submission_id == incident.job_id

    # the registry: v1 trained, v2 from the sweep, the retrained challenger promoted over v1
    challenger = incident.challenger
    assert int(challenger) >= 3 and registry.version_of("champion") == challenger
    assert registry.version_of("previous") == "1"
    run = registry.client.get_run(registry.client.get_model_version(spec.name, challenger).run_id)
    assert run.data.tags["mlray.incident"] == incident.incident_id
    assert run.data.tags["mlray.table_version"] == "4"  # trained on the files that landed upstream

    # the audit log tells the loop in order, and the service is gone with the demo
    actions = [e["action"] for e in reversed(AuditLog(spec.platform).read())]
    assert [a for a in actions if a in LOOP] == LOOP
    assert spec.name not in serve.status().applications


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path), "--fast"])
    assert result.exit_code == 2
    assert "not empty and was not made by `mlray demo`" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
