"""Shared fixtures: one local Ray session per test run, and project specs in temporary folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

STARTER = Path(__file__).parents[1] / "mlray" / "templates" / "starter.yaml"


@pytest.fixture(autouse=True)
def _clean_mlray_env(monkeypatch):
    """Tests see no MLRAY_* settings from the machine they run on."""
    for key in list(os.environ):
        if key.startswith("MLRAY_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray for the whole run, with more logical CPUs than this 2-core machine has (its RayContext), started
    as mlray starts an embedded one (Serve's fast ingress included)."""
    import ray
    from ray.data import DataContext

    from mlray.runtime import start_local_ray

    # The dashboard carries the Jobs API that `ray job submit` talks to.
    context = start_local_ray(tmp_path_factory.mktemp("ray-session"), num_cpus=4, include_dashboard=True,
                              dashboard_host="127.0.0.1", log_to_driver=False, logging_level="ERROR")
    data_context = DataContext.get_current()
    data_context.enable_progress_bars = False
    data_context.print_on_execution_start = False
    yield context
    ray.shutdown()


@pytest.fixture
def starter_text() -> str:
    return STARTER.read_text()


@pytest.fixture
def project(tmp_path, starter_text):
    """A project folder holding the starter spec; its state lives inside the folder."""
    from mlray.spec import load_spec

    spec_file = tmp_path / "mlray.yaml"
    spec_file.write_text(starter_text.replace("min_rows: 1000", "min_rows: 10"))
    return load_spec(spec_file)
