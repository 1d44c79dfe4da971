"""The model package: files mlray reads itself, sealed by a manifest whose digest the model registry holds.

Files: the network's weights (a state dict, read with `weights_only=True`), the fitted feature set and the package
config as JSON, the project spec, a reference sample of raw training inputs (for drift detection), and the pyfunc
flavour as models-from-code (`pyfunc_model.py`, nothing pickled), so any MLflow tool can still run
`mlflow.pyfunc.load_model("models:/NAME@champion").predict(raw_rows)`. mlray loads with `load_package`: the
manifest checked against the registry's tag, every file against the manifest, then parsed; no code of the package
runs and nothing is unpickled.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pandas as pd
import pyarrow as pa
import torch
import yaml
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from mlray.features import FittedFeatures
from mlray.registry.manifest import MANIFEST, MANIFEST_TAG, PackageUnverified, pinned_uri, unpin, verify, write_manifest
from mlray.registry.network import TabularNet
from mlray.registry.scoring import PackageConfig, Scoring, predict_arrays, predict_frame, prediction_records, prediction_schema

__all__ = ["PackageConfig", "Scoring", "TabularPackage", "load_package", "log_package", "naive_utc", "predict_arrays",
           "predict_frame", "prediction_records", "prediction_schema"]

FILES = {"weights": "weights.pt", "features": "features.json", "config": "config.json", "spec": "spec.yaml",
         "reference": "reference.parquet"}
READ = ("weights", "features", "config", "reference")
ARTIFACTS = "artifacts"  # the folder of a pyfunc package that MLflow puts `artifacts` in
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


@dataclass
class TabularPackage:
    """A package in memory: the network, its config, the fitted features and the reference sample's bytes."""

    net: TabularNet
    config: PackageConfig
    fitted: FittedFeatures
    reference_parquet: bytes = field(default=b"", repr=False)

    @classmethod
    def from_bytes(cls, contents: dict[str, bytes]) -> TabularPackage:
        """Built from the contents of the files (keyed as `FILES`): JSON and tensors only."""
        config = PackageConfig(**json.loads(contents["config"]))
        net = config.network()
        net.load_state_dict(torch.load(io.BytesIO(contents["weights"]), map_location="cpu", weights_only=True))
        net.eval()
        return cls(net, config, FittedFeatures.from_json(contents["features"].decode()), contents.get("reference", b""))

    def reference(self) -> pd.DataFrame:
        """The raw training inputs packaged with the model (drift checks compare live traffic with them)."""
        return pd.read_parquet(io.BytesIO(self.reference_parquet))

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return predict_frame(self.net, self.config, self.fitted, frame)


def load_package(uri: str, client: MlflowClient | None = None) -> TabularPackage:
    """The verified package of 'models:/NAME/3', 'models:/NAME@alias' or a pinned location (`Registry.artifact_uri`);
    PackageTampered, naming the file and the version, for one that does not match its manifest."""
    if uri.startswith("models:/") and "#" not in uri:
        client = client or MlflowClient()
        uri = pinned_uri(client, _registered(client, uri))
    location, digest, label = unpin(uri)
    with _local(location) as root:
        contents = verify(root, digest, label, {f"{ARTIFACTS}/{FILES[key]}" for key in READ})
    return TabularPackage.from_bytes({key: contents[f"{ARTIFACTS}/{FILES[key]}"] for key in READ})


def _registered(client: MlflowClient, uri: str):
    """The model version 'models:/NAME/VERSION' or 'models:/NAME@alias' names now."""
    path = uri.removeprefix("models:/")
    if "@" in path:
        return client.get_model_version_by_alias(*path.rsplit("@", 1))
    name, _, version = path.rpartition("/")
    if not name:
        raise PackageUnverified(f"{uri} names no registered version: load 'models:/NAME/VERSION' or 'models:/NAME@alias'")
    return client.get_model_version(name, version)


@contextmanager
def _local(location: str):
    """The package's folder on this machine: in place for a local store, else a temporary download."""
    if urlparse(location).scheme in ("", "file"):
        yield Path(local_file_uri_to_path(location))
        return
    with tempfile.TemporaryDirectory(prefix="mlray-package-") as folder:
        yield Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=folder))


def naive_utc(frame: pd.DataFrame) -> pd.DataFrame:
    """MLflow signatures take timezone-naive datetimes: tz-aware columns become naive UTC."""
    frame = frame.copy()
    for column in frame.columns:
        dtype = frame[column].dtype
        arrow_timestamp = isinstance(dtype, pd.ArrowDtype) and pa.types.is_timestamp(dtype.pyarrow_dtype)
        if isinstance(dtype, pd.DatetimeTZDtype) or arrow_timestamp:
            frame[column] = pd.to_datetime(frame[column], utc=True).dt.tz_localize(None).astype("datetime64[ns]")
    return frame


def log_package(net: TabularNet, config: PackageConfig, fitted: FittedFeatures, spec_doc: dict,
                reference: pd.DataFrame, registered_name: str | None = None):
    """Log the package to the active MLflow run, seal it with its manifest and register it with the manifest's digest
    as the version's `mlray.manifest_sha256` tag; returns MLflow's model info."""
    with tempfile.TemporaryDirectory(prefix="mlray-package-") as folder:
        paths = {key: Path(folder) / name for key, name in FILES.items()}
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, paths["weights"])
        paths["features"].write_text(fitted.to_json())
        paths["config"].write_text(json.dumps(asdict(config), indent=2, default=str))
        paths["spec"].write_text(yaml.safe_dump(spec_doc, sort_keys=False))
        reference = naive_utc(reference)
        reference.to_parquet(paths["reference"], index=False)
        example = reference.head(5)
        signature = mlflow.models.infer_signature(example, predict_frame(net.eval(), config, fitted, example))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_CODE), artifacts={k: str(v) for k, v in paths.items()},
            signature=signature, input_example=example, code_paths=[str(Path(__file__).parents[1])],
            pip_requirements=package_requirements(),
        )
    digest = seal(info.model_id)
    if registered_name:
        version = mlflow.register_model(info.model_uri, registered_name, tags={MANIFEST_TAG: digest})
        info.registered_model_version = version.version
    return info


def seal(model_id: str) -> str:
    """Add the manifest of a logged model's files to it and tag the logged model with the manifest's digest."""
    client = MlflowClient()
    with tempfile.TemporaryDirectory(prefix="mlray-seal-") as folder:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=client.get_logged_model(model_id).artifact_location,
                                                        dst_path=str(Path(folder) / "package")))
        digest = write_manifest(root)
        upload = Path(folder) / "manifest"
        upload.mkdir()
        shutil.copy(root / MANIFEST, upload / MANIFEST)
        client.log_model_artifacts(model_id, str(upload))
    client.set_logged_model_tags(model_id, {MANIFEST_TAG: digest})
    return digest


# What loading a package imports besides the mlray code shipped inside it (`code_paths`): a fresh
# environment with these pinned versions can load and run it, mlray installed or not.
PACKAGE_REQUIREMENTS = ("mlflow", "torch", "numpy", "pandas", "pyarrow", "pydantic", "pyyaml")


def package_requirements() -> list[str]:
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in PACKAGE_REQUIREMENTS]  # no '+cpu': any build
