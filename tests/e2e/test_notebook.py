"""The quickstart notebook, executed headlessly as a person would run it (fast sizes, on the suite's Ray): it walks the
whole loop, and what it leaves behind shows the loop closed — drift reports, a promoted incident, a retrained champion
in the registry, a canary in the audit log, and no service left running."""

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "quickstart.ipynb"


def execute(notebook: Path, cwd: Path, env: dict[str, str]) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute(env=env)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quickstart_notebook_closes_the_loop(tmp_path, ray_session):
    from ray import serve

    from mlray import dataplane
    from mlray.audit import AuditLog
    from mlray.demo.project import stop_service
    from mlray.incidents import Incidents
    from mlray.registry.models import Registry
    from mlray.serve.deploy import running_apps
    from mlray.spec import load_spec
    from mlray.window_reports import read_reports

    folder = tmp_path / "quickstart"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRAY_")} | {
        "RAY_ADDRESS": ray_session.address_info["gcs_address"],
        "MLRAY_NOTEBOOK_DIR": str(folder),
        "MLRAY_NOTEBOOK_FAST": "1",
    }
    serve.shutdown()  # a Serve left by an earlier test would keep its own HTTP port, not the notebook's
    try:
        execute(NOTEBOOK, tmp_path, env)
        spec = load_spec(folder / "mlray.yaml")
        lake, registry = dataplane.lake_of(spec), Registry(spec)

        reports = read_reports(lake)
        assert len(reports) >= 3 and any(r.verdict == "drift" for r in reports)
        # the live precision the notebook plots is a real number: the package's threshold flags fraud
        assert any(m.get("precision", 0) > 0 for r in reports for m in r.quality.values())
        (incident,) = Incidents(lake).all()
        assert incident.status == "promoted", incident
        champion = registry.version_of("champion")
        assert champion == incident.challenger and int(champion) > 1 and registry.version_of("previous") == "1"
        actions = {e["action"] for e in AuditLog(spec.platform).read()}
        assert {"canary.start", "canary.promote", "retrain.promoted"} <= actions
        assert lake.exists(spec.serve.inference_log_table)
        served = set(lake.read(spec.serve.inference_log_table, columns=["model_version"]).column(0).to_pylist())
        assert {"1", champion} <= served
        assert spec.name not in running_apps(), "the notebook's last cell takes the service down"
    finally:
        if (folder / "mlray.yaml").exists():
            stop_service(load_spec(folder / "mlray.yaml"))
        serve.shutdown()
