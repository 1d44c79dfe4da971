"""MLflow set-up: the tracking store the platform names (embedded SQLite by default) and the experiment."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from mlray.redaction import URI_CREDENTIALS
from mlray.spec import PlatformSpec

SUPPRESS_RUN_LINKS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


def tracking_client(platform: PlatformSpec) -> MlflowClient:
    """A client of the platform's store, this process's MLflow pointed there too; asks the store nothing yet."""
    uri = platform.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    point_at(platform)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client: MlflowClient, platform: PlatformSpec, experiment: str) -> str:
    """The experiment's id, created if missing. With the embedded store, artifacts live under
    <state_dir>/mlflow/artifacts (not ./mlruns)."""
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    location = None
    if "://" not in platform.state_dir:
        location = (Path(platform.state_dir) / "mlflow" / "artifacts" / experiment).resolve().as_uri()
    return client.create_experiment(experiment, artifact_location=location)


def point_at(platform: PlatformSpec) -> None:
    """Point this process's MLflow at the platform's store; cheap (opens no store), for workers that only load. A
    store whose URI holds a password keeps MLflow from printing run links (they carry the URI whole) to stdout,
    where a job's or a worker's output would keep it."""
    uri = platform.tracking_uri
    if URI_CREDENTIALS.search(uri):
        os.environ[SUPPRESS_RUN_LINKS] = "true"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
