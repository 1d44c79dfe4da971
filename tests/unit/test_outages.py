"""What a long-lived piece does while the lake or MLflow is unreachable: it constructs without I/O (so a restart
succeeds and comes back without a person), says so at its first call, and retries on a backoff."""

import time

import pytest

from mlray.control.retry import backoff
from mlray.monitor.watch import Monitor
from mlray.registry.models import Registry

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens on loopback


@pytest.fixture
def cut_off(project, monkeypatch):
    """The starter project with its lake on an S3 endpoint and its MLflow at an address where nothing answers."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    options = {"AWS_ENDPOINT_URL": UNREACHABLE, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
               "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true", "AWS_MAX_RETRIES": "0",
               "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    platform = project.platform.model_copy(update={"lake_root": "s3://lake/cut-off", "storage_options": options,
                                                   "mlflow_tracking_uri": UNREACHABLE})
    return project.model_copy(update={"platform": platform})


def test_the_monitor_constructs_without_the_lake_or_mlflow_and_fails_at_its_first_read(cut_off):
    started = time.monotonic()
    monitor = Monitor(cut_off)
    assert time.monotonic() - started < 1.0 and monitor.checkpoint is None
    with pytest.raises(OSError, match="S3 error"):  # the checkpoint is read at the first call, not in the constructor
        monitor.status()


def test_the_registry_constructs_without_mlflow(cut_off):
    """A `Registry` is made before it is needed (the monitor, the control plane): only a call asks the server."""
    from mlray.registry.models import RegistryUnavailable

    registry = Registry(cut_off)
    with pytest.raises(RegistryUnavailable, match="did not say which version 'champion' is"):
        registry.version_of("champion")


def test_retries_back_off_from_1_s_doubling_to_30_s():
    assert [backoff(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff(5000) == 30.0  # a replica failing for days still waits 30 s, with no overflow
