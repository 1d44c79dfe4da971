"""Scoring a model on held-out rows: the test split of a pinned snapshot, overall and per slice.

Used by training (the new model and the champion, on the same rows) and by `mlray evaluate`
(any registered version on any version of the table).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa

from mlray import dataplane
from mlray.errors import UserError
from mlray.quality import slice_metrics, task_metrics
from mlray.registry.manifest import PackageTampered, PackageUnverified
from mlray.registry.models import Registry
from mlray.registry.package import naive_utc
from mlray.spec import ProjectSpec
from mlray.train.data import SPLITS, LabelEncoding, split_index

log = logging.getLogger(__name__)


def raw_split_rows(dataset, spec: ProjectSpec, split: str, sample: int | None = None, rows: int = 0) -> pd.DataFrame:
    """One split's rows, raw: the test rows models are scored on, or (`sample`) a uniform sample of about that many
    of them out of a table of `rows`, drawn over the whole table rather than its first rows."""
    id_column, keep = spec.train_table.id_column, SPLITS.index(split)
    if id_column is None:
        raise UserError(f"table '{spec.data.train_table}' needs an id_column: rows are split by a hash of their id")

    def rows_of_split(batch: pa.Table) -> pa.Table:
        return batch.filter(pa.array(split_index(batch.column(id_column), spec.train.split) == keep))

    chosen = dataset.map_batches(rows_of_split, batch_format="pyarrow")
    if not sample:
        return chosen.to_pandas()
    fraction = 2.0 * sample / max(rows * split_share(spec, split), 1)
    frame = (chosen.random_sample(fraction, seed=0) if fraction < 1 else chosen).to_pandas()
    return frame.sample(sample, random_state=0).sort_index() if len(frame) > sample else frame


def split_share(spec: ProjectSpec, split: str) -> float:
    """The share of rows that fall in `split`."""
    shares = spec.train.split
    return {"validation": shares.validation, "test": shares.test}.get(split, 1 - shares.validation - shares.test)


def score(frame: pd.DataFrame, task: str, classes: list) -> np.ndarray:
    if task == "binary":
        return frame["score"].to_numpy()
    if task == "multiclass":
        return frame[[f"probability_{c}" for c in classes]].to_numpy()
    return frame["prediction"].to_numpy()


def evaluate_frame(predicted: pd.DataFrame, test: pd.DataFrame, labels: LabelEncoding, spec: ProjectSpec,
                   threshold: float) -> tuple:
    """(metrics, slice metrics) of predictions against the labelled rows of `test`; `threshold`: the package's."""
    y_true = labels.encode(pa.array(test[labels.column]))
    labelled = y_true >= 0 if labels.task != "regression" else ~np.isnan(y_true)
    scores = score(predicted, labels.task, labels.classes)[labelled]
    y_true = y_true[labelled]
    metrics = task_metrics(labels.task, y_true, scores, threshold, labels.classes)
    slices = slice_metrics(labels.task, y_true, scores,
                           {c: test[c].to_numpy()[labelled] for c in spec.train.slices},
                           threshold, labels.classes)
    return metrics, slices


def champion_metrics(registry: Registry, test: pd.DataFrame, labels: LabelEncoding, spec: ProjectSpec) -> dict | None:
    """The current champion scored on these held-out rows (None when there is no champion)."""
    if registry.version_of("champion") is None:
        return None
    try:
        champion = registry.load("champion")
    except PackageTampered:
        raise
    except PackageUnverified as exc:  # registered before manifests: it cannot be served either, so it is replaced
        log.warning("%s; the gate compares with no champion", exc)
        return None
    metrics, _ = evaluate_frame(champion.predict(naive_utc(test)), test, labels, spec, champion.config.threshold)
    return metrics


def held_out_rows(spec: ProjectSpec, version: int | None) -> tuple[int, pd.DataFrame]:
    """(pinned version, the test split's raw rows) of the train table; an empty split is a UserError."""
    lake = dataplane.lake_of(spec)
    name = spec.data.train_table
    pinned = lake.open(name, version).version()
    test = raw_split_rows(lake.dataset(name, pinned), spec, "test")
    if test.empty:
        raise UserError(f"the test split of table '{name}' v{pinned} is empty: add rows or raise train.split.test")
    return pinned, test


@dataclass
class Evaluation:
    model_name: str
    model_version: str
    table: str
    table_version: int
    rows: int
    metrics: dict[str, float]
    slices: dict
    run_id: str


def evaluate_model(spec: ProjectSpec, reference: str = "champion", version: int | None = None) -> Evaluation:
    """Score a registered model on the held-out split of a pinned table version; log it as an MLflow run."""
    registry = Registry(spec)
    name, model_version = registry.resolve(reference)  # an unknown model fails here, before any data is read
    model = registry.load(f"{name}/{model_version}")
    config = model.config
    table = spec.data.train_table
    if config.label_column not in spec.train_table.columns:
        raise UserError(f"model {name}/{model_version} predicts '{config.label_column}', which table '{table}' lacks")
    pinned, test = held_out_rows(spec, version)
    labels = LabelEncoding(config.label_column, config.task, config.classes)
    metrics, slices = evaluate_frame(model.predict(naive_utc(test)), test, labels, spec, config.threshold)
    tags = {"mlray.evaluated_model": name, "mlray.evaluated_version": model_version, "mlray.table": table,
            "mlray.table_version": str(pinned)}
    with mlflow.start_run(run_name=f"evaluate-{name}-v{model_version}-{table}@{pinned}",
                          experiment_id=registry.experiment_id, tags=tags) as run:
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if np.isfinite(v)} | {"test_rows": len(test)})
        mlflow.log_dict(slices, "slice_metrics.json")
    return Evaluation(name, model_version, table, pinned, len(test), metrics, slices, run.info.run_id)
