"""The model package: one MLflow pyfunc model holding everything needed to predict from raw rows.

Artifacts: the network's weights (a state dict, loaded with `weights_only=True`), the fitted
feature set, the package config (task, classes, input layout, network spec), the project
spec, and a reference sample of raw training inputs (for drift detection). Any MLflow tool can
load it: `mlflow.pyfunc.load_model("models:/NAME@champion").predict(raw_rows)`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import torch
import yaml

from mlray.features import FittedFeatures
from mlray.registry.network import TabularNet
from mlray.registry.scoring import PackageConfig, Scoring, predict_arrays, predict_frame, prediction_records, prediction_schema

__all__ = ["PackageConfig", "Scoring", "TabularPackage", "load_package", "log_package", "naive_utc", "predict_arrays",
           "predict_frame", "prediction_records", "prediction_schema"]

WEIGHTS, FEATURES, CONFIG, SPEC, REFERENCE = "weights", "features", "config", "spec", "reference"


class TabularPackage(mlflow.pyfunc.PythonModel):
    """The pyfunc flavour: rebuilds the network from its config and loads tensors only."""

    def load_context(self, context) -> None:
        self.config = PackageConfig(**json.loads(Path(context.artifacts[CONFIG]).read_text()))
        self.fitted = FittedFeatures.from_json(Path(context.artifacts[FEATURES]).read_text())
        self.net = self.config.network()
        self.net.load_state_dict(torch.load(context.artifacts[WEIGHTS], map_location="cpu", weights_only=True))
        self.net.eval()
        self.reference_path = context.artifacts.get(REFERENCE)

    def reference(self) -> pd.DataFrame:
        """The raw training inputs packaged with the model (drift checks compare live traffic with them)."""
        return pd.read_parquet(self.reference_path)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return predict_frame(self.net, self.config, self.fitted, model_input)


def load_package(uri: str) -> TabularPackage:
    """The package behind a model URI ('models:/NAME/3'): its network, config and fitted features, loaded."""
    return mlflow.pyfunc.load_model(uri).unwrap_python_model()


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
    """Log the package to the active MLflow run (and register it); returns MLflow's model info."""
    with tempfile.TemporaryDirectory(prefix="mlray-package-") as folder:
        folder_path = Path(folder)
        paths = {WEIGHTS: folder_path / "weights.pt", FEATURES: folder_path / "features.json",
                 CONFIG: folder_path / "config.json", SPEC: folder_path / "spec.yaml",
                 REFERENCE: folder_path / "reference.parquet"}
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, paths[WEIGHTS])
        paths[FEATURES].write_text(fitted.to_json())
        paths[CONFIG].write_text(json.dumps(asdict(config), indent=2, default=str))
        paths[SPEC].write_text(yaml.safe_dump(spec_doc, sort_keys=False))
        reference = naive_utc(reference)
        reference.to_parquet(paths[REFERENCE], index=False)
        example = reference.head(5)
        output = predict_frame(net.eval(), config, fitted, example)
        signature = mlflow.models.infer_signature(example, output)
        return mlflow.pyfunc.log_model(
            name="model", python_model=TabularPackage(), artifacts={k: str(v) for k, v in paths.items()},
            signature=signature, input_example=example, registered_model_name=registered_name,
            code_paths=[str(Path(__file__).parents[1])], pip_requirements=package_requirements(),
        )


# What loading a package imports besides the mlray code shipped inside it (`code_paths`): a fresh
# environment with these pinned versions can load and run it, mlray installed or not.
PACKAGE_REQUIREMENTS = ("mlflow", "torch", "numpy", "pandas", "pyarrow", "pydantic", "pyyaml")


def package_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in PACKAGE_REQUIREMENTS]  # no '+cpu': any build
