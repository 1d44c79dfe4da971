"""Scoring with a model package's contents, without MLflow: its config, the network and the fitted features.

Everything that turns raw rows into predictions lives here, so a process that only scores (a batch
prediction actor, a serving replica) imports torch and the feature transform, not MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mlray.features import FittedFeatures, transform
from mlray.registry.network import TabularNet, outputs_for, predictions
from mlray.spec import ModelSpec


@dataclass
class PackageConfig:
    task: str
    label_column: str
    classes: list
    numeric: int
    cardinalities: list[int]
    model: dict  # ModelSpec as JSON
    threshold: float = 0.5
    feature_version: str = ""
    lineage: dict = field(default_factory=dict)
    calibration: dict | None = None  # `mlray.calibration.Calibrator` as a dict: scores → probabilities
    validation_confusion: list[list[int]] | None = None  # [predicted][true] class counts on the validation split

    def network(self) -> TabularNet:
        return TabularNet(self.numeric, self.cardinalities, outputs_for(self.task, len(self.classes)),
                          ModelSpec.model_validate(self.model))


def predict_arrays(net: TabularNet, config: PackageConfig, fitted: FittedFeatures, rows: Any) -> dict[str, pa.Array]:
    """Raw rows → the prediction columns as Arrow arrays (`prediction_schema`), through the one feature transform."""
    inputs = transform(rows, fitted)
    with torch.inference_mode():
        logits = net(torch.from_numpy(inputs["numeric"]), torch.from_numpy(inputs["categorical"]))
    out = predictions(config.task, logits).cpu().numpy().astype(np.float64)
    if config.task == "binary":
        negative, positive = pa.array(config.classes)
        columns = {"prediction": pc.if_else(pa.array(out >= config.threshold), positive, negative), "score": pa.array(out)}
    elif config.task == "multiclass":
        columns = {"prediction": pa.array(config.classes).take(pa.array(out.argmax(axis=1)))}
        columns.update({f"probability_{cls}": pa.array(out[:, i]) for i, cls in enumerate(config.classes)})
    else:
        columns = {"prediction": pa.array(out)}
    return columns | {"feature_version": pa.repeat(pa.scalar(config.feature_version), len(out))}


def prediction_records(columns: dict[str, pa.Array]) -> list[dict]:
    """`predict_arrays`' columns as one dict of Python values per row (what a service answers), without pandas."""
    names = list(columns)
    return [dict(zip(names, row)) for row in zip(*(columns[name].to_pylist() for name in names))]


def predict_frame(net: TabularNet, config: PackageConfig, fitted: FittedFeatures, rows: Any) -> pd.DataFrame:
    """Raw rows → a DataFrame of predictions (class labels as Python values), through the one feature transform."""
    columns = predict_arrays(net, config, fitted, rows)
    return pd.DataFrame({name: values.to_pylist() if name in ("prediction", "feature_version") else values.to_numpy()
                         for name, values in columns.items()})


def prediction_schema(config: PackageConfig) -> pa.Schema:
    """The columns `predict_frame` makes, typed, known before any row is scored (an output table's declaration)."""
    if config.task == "regression":
        fields = [pa.field("prediction", pa.float64())]
    else:
        fields = [pa.field("prediction", pa.array(config.classes).type)]
        if config.task == "binary":
            fields.append(pa.field("score", pa.float64()))
        else:
            fields += [pa.field(f"probability_{cls}", pa.float64()) for cls in config.classes]
    return pa.schema(fields + [pa.field("feature_version", pa.string())])


@dataclass
class Scoring:
    """A loaded package's network, config and fitted features; it pickles as tensors and JSON-able parts, so the
    driver can hand it to scoring actors that never open the model registry."""

    net: TabularNet
    config: PackageConfig
    fitted: FittedFeatures

    @classmethod
    def of(cls, package) -> "Scoring":
        return cls(package.net, package.config, package.fitted)

    def __reduce__(self):
        weights = {name: tensor.detach().cpu() for name, tensor in self.net.state_dict().items()}
        return _rebuild, (self.config, self.fitted, weights)

    def arrays(self, rows: Any) -> dict[str, pa.Array]:
        return predict_arrays(self.net, self.config, self.fitted, rows)


def _rebuild(config: PackageConfig, fitted: FittedFeatures, weights: dict) -> Scoring:
    net = config.network()
    net.load_state_dict(weights)
    net.eval()
    return Scoring(net, config, fitted)
