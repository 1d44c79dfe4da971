"""`mlray train`: a validated, pinned Delta snapshot → Ray Train → evaluated, tracked, registered, gated.

Everything that can be wrong with the input is checked before a worker starts: the table
must pass validation, the label must exist and hold something to learn.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch

from mlray import dataplane
from mlray.errors import UserError
from mlray.lake import Lake
from mlray.registry.gate import decide
from mlray.registry.models import Registry
from mlray.registry.package import PackageConfig, log_package, predict_frame
from mlray.spec import ProjectSpec
from mlray.spec.secrets import redacted_document
from mlray.train.calibrate import fit_on_validation
from mlray.train.config import CHECKPOINT_FILE, Fault, LoopConfig
from mlray.train.data import Prepared, check_splits, resolve_labels, split_datasets
from mlray.train.evaluate import champion_metrics, evaluate_frame, raw_split_rows
from mlray.train.execution import RAY_TRAIN_DEFAULTS, LocalResult, choose_execution, require_usable_gpus, use_gpu, worker_inputs
from mlray.train.loop import train_loop_per_worker
from mlray.train.progress import EpochWatcher, Progress

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    run_id: str
    run_name: str
    model_name: str
    model_version: str | None
    decision: str  # 'passed' or 'rejected' by the gate; 'champion' or 'challenger' once the control plane admits it
    reasons: list[str]
    metrics: dict[str, float]
    slices: dict
    epochs: list[int]
    table_version: int
    feature_version: str
    task: str
    execution: str = "ray"  # 'local': Ray Train's local mode in the calling process; 'ray': Ray Train workers


def prepare(spec: ProjectSpec, version: int | None = None, since: datetime | None = None) -> Prepared:
    """Validate and fit features on a pinned version (only its rows with an event time from `since` on, when given),
    and settle the labels: all before any worker starts."""
    lake = dataplane.lake_of(spec)
    name = spec.data.train_table
    pinned = lake.open(name, version).version()
    raw = lake.dataset(name, pinned)  # opened once: validated, fitted and trained on
    if since is not None:
        raw = recent_rows(raw, spec, since)
    fitted = dataplane.fit_features(spec, pinned, dataset=raw)
    labels = resolve_labels(lake, spec, pinned)
    split_rows = check_splits(raw, spec)
    return Prepared(pinned, lake.uri(name), fitted, labels, split_datasets(raw, fitted, labels, spec), raw, split_rows)


def recent_rows(raw, spec: ProjectSpec, since: datetime):
    """The rows whose event time is `since` or later (a retraining on the recent past only)."""
    column = spec.train_table.event_time_column
    if column is None:
        raise UserError(f"training on a recent window needs data.tables.{spec.data.train_table}.event_time_column")

    def keep(batch: pa.Table) -> pa.Table:
        kind = batch.schema.field(column).type
        bound = pa.scalar(since.date() if pa.types.is_date(kind) else since, kind)
        return batch.filter(pc.greater_equal(batch.column(column), bound))

    return raw.map_batches(keep, batch_format="pyarrow", batch_size=None)


def precision(setting: str, gpu: bool) -> str:
    if setting != "auto":
        return setting
    return "16-mixed" if gpu else "32-true"


def spec_hash(spec: ProjectSpec) -> str:
    return hashlib.sha256(json.dumps(redacted_document(spec), sort_keys=True).encode()).hexdigest()[:16]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def lineage_tags(spec: ProjectSpec, prepared: Prepared, extra: dict[str, str] | None = None) -> dict[str, str]:
    tags = {"mlray.table": spec.data.train_table, "mlray.table_uri": prepared.table_uri,
            "mlray.table_version": str(prepared.table_version), "mlray.feature_version": prepared.fitted.version,
            "mlray.spec_hash": spec_hash(spec), "mlray.task": prepared.labels.task,
            "mlray.ray_job_id": ray.get_runtime_context().get_job_id()}
    commit = git_commit()
    if commit:
        tags["mlray.git_commit"] = commit
    return tags | (extra or {})


def checkpoint_weights(checkpoint) -> dict:
    """A Lightning checkpoint's network weights (tensors only, no unpickling)."""
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}


def best_checkpoint(result):
    """The kept checkpoint with the lowest validation loss (the latest when none carries one)."""
    if not result.best_checkpoints:
        return result.checkpoint
    return min(result.best_checkpoints, key=lambda pair: pair[1].get("val_loss", float("inf")))[0]


def trained_epochs(registry: Registry, run_id: str) -> list[int]:
    """Every epoch the workers finished, in order, repeats included (a restart from 0 would show twice)."""
    return [m.step for m in sorted(registry.client.get_metric_history(run_id, "val_loss"), key=lambda m: m.timestamp)]


def ray_storage(platform, folder: str) -> dict:
    """Ray Train/Tune storage arguments for checkpoints under `platform.checkpoints_uri`/`folder`: shared storage
    (s3://, gs://) goes through a filesystem built with the lake's storage options (endpoint, credentials)."""
    uri = f"{platform.checkpoints_uri.rstrip('/')}/{folder}"
    if "://" not in uri or uri.startswith("file://"):
        return {"storage_path": uri.removeprefix("file://")}
    filesystem, path = Lake.from_platform(platform).filesystem(uri)
    return {"storage_path": path, "storage_filesystem": filesystem}


def fit_on_ray(spec: ProjectSpec, prepared: Prepared, run_name: str, run_id: str | None, fault: Fault | None = None,
               callbacks: tuple = (), trial_checkpoints: tuple[str, object] | None = None):
    """One Ray Train run; `callbacks` are Ray Train callbacks (a Tune trial on workers passes its report bridge);
    `trial_checkpoints` (folder, filesystem) makes it a Tune trial training in this process, reporting to Tune."""
    # Ray Train: imported when a run starts, not with this module (ray.train.torch alone adds ~0.6 s)
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    gpu = use_gpu(spec.train.use_gpu)
    local = trial_checkpoints is not None or choose_execution(spec, prepared, fault, callbacks) == "local"
    shards, datasets = worker_inputs(spec, prepared, local)
    folder = tempfile.TemporaryDirectory(prefix="mlray-local-run-") if local else None
    config = LoopConfig(spec.model, spec.train, prepared.labels.task, len(prepared.labels.classes),
                        len(prepared.fitted.numeric_names), prepared.fitted.cardinalities,
                        precision(spec.train.precision, gpu), shards, folder.name if folder else None,
                        trial_checkpoints, spec.platform.tracking_uri, run_id, fault)
    if trial_checkpoints is not None:  # a Tune trial: Tune refuses Ray Train calls, so the loop runs as it is
        log.info("training %s in this trial's process", run_name)
        train_loop_per_worker(config)
        return LocalResult.read(folder)
    if local:
        log.info("training %s in this process (Ray Train's local mode)", run_name)
        TorchTrainer(train_loop_per_worker, train_loop_config=config, scaling_config=ScalingConfig(num_workers=0),
                     run_config=RunConfig(name=run_name)).fit()
        return LocalResult.read(folder)
    if gpu and not callbacks:  # a Tune trial's sweep checked once (its placement group holds no GPU for the probe)
        require_usable_gpus()
    for name, value in RAY_TRAIN_DEFAULTS.items():  # read by Ray Train's controller, which the driver's env reaches
        os.environ.setdefault(name, value)
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=spec.train.num_workers, use_gpu=gpu,
                                     resources_per_worker={"CPU": spec.train.cpus_per_worker}),
        datasets=datasets,
        run_config=RunConfig(
            name=run_name, **ray_storage(spec.platform, "train"),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.train.checkpoints_to_keep,
                                               checkpoint_score_attribute="val_loss", checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=spec.train.max_failures),
            callbacks=list(callbacks) or None,
        ),
    )
    return trainer.fit()


def log_inputs(spec: ProjectSpec, tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)
    params = {f"train.{k}": v for k, v in spec.train.model_dump(mode="json", exclude={"gate"}).items()
              if not isinstance(v, (dict, list))}
    mlflow.log_params(params | {"model.hidden": str(spec.model.hidden), "model.dropout": spec.model.dropout})
    mlflow.log_dict(redacted_document(spec), "spec.json")


def _package_config(spec: ProjectSpec, prepared: Prepared, tags: dict[str, str]) -> PackageConfig:
    labels, fitted = prepared.labels, prepared.fitted
    return PackageConfig(labels.task, labels.column, labels.classes, len(fitted.numeric_names), fitted.cardinalities,
                         spec.model.model_dump(mode="json"), feature_version=fitted.version, lineage=tags)


def register(spec: ProjectSpec, prepared: Prepared, registry: Registry, tags: dict[str, str], weights: dict):
    """Into the active MLflow run: score the trained weights on the held-out rows, log, package, register,
    and let the gate decide. Returns (version, status, decision, metrics, slices)."""
    config = _package_config(spec, prepared, tags)
    net = config.network()
    net.load_state_dict(weights)
    net.eval()
    validation = raw_split_rows(prepared.raw, spec, "validation")
    chosen = fit_on_validation(spec.train, prepared.labels, predict_frame(net, config, prepared.fitted, validation),
                               validation)
    config = replace(config, threshold=chosen.threshold, calibration=chosen.calibration,
                     validation_confusion=chosen.confusion)
    mlflow.log_metrics({k: v for k, v in chosen.metrics.items() if np.isfinite(v)})
    test = raw_split_rows(prepared.raw, spec, "test")
    metrics, slices = evaluate_frame(predict_frame(net, config, prepared.fitted, test), test, prepared.labels, spec,
                                     config.threshold)
    mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if np.isfinite(v)})
    mlflow.log_dict(slices, "slice_metrics.json")
    kept = [*prepared.fitted.source_columns, *(c for c in spec.train.slices if c not in prepared.fitted.source_columns)]
    reference = raw_split_rows(prepared.raw, spec, "train", spec.monitor.reference_rows,
                               prepared.fitted.lineage.rows)[kept]  # slice columns too: segments are watched
    info = log_package(net, config, prepared.fitted, redacted_document(spec), reference, registry.model_name)
    champion = champion_metrics(registry, test, prepared.labels, spec)
    decision = decide(prepared.labels.task, metrics, spec.train.gate, champion)
    version = str(info.registered_model_version)
    status = registry.record_decision(version, decision)
    return version, status, decision, metrics, slices


def default_run_name(spec: ProjectSpec, prepared: Prepared, kind: str = "") -> str:
    return f"{spec.name}{kind}-v{prepared.table_version}-{prepared.fitted.version[:8]}-{spec_hash(spec)[:8]}"


def train_model(spec: ProjectSpec, version: int | None = None, run_name: str | None = None,
                fault: Fault | None = None, progress: Progress | None = None, since: datetime | None = None,
                tags: dict[str, str] | None = None) -> TrainOutcome:
    """Train on a pinned snapshot (its rows from `since` on), evaluate on the held-out split, log, package, register
    and gate; `tags` join the lineage tags (a retraining names its incident).

    `progress(done, total)` is called as epochs finish."""
    prepared = prepare(spec, version, since)
    registry = Registry(spec)
    run_name = run_name or default_run_name(spec, prepared)
    run_id = registry.run_for(run_name)
    tags = lineage_tags(spec, prepared, tags)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name,
                          experiment_id=registry.experiment_id) as run:
        log_inputs(spec, tags)
        with EpochWatcher(registry, run.info.run_id, spec.train.epochs, progress):
            result = fit_on_ray(spec, prepared, run_name, run.info.run_id, fault)
        version_, status, decision, metrics, slices = register(spec, prepared, registry, tags,
                                                               checkpoint_weights(best_checkpoint(result)))
    return TrainOutcome(run.info.run_id, run_name, registry.model_name, version_, status, decision.reasons,
                        metrics, slices, trained_epochs(registry, run.info.run_id), prepared.table_version,
                        prepared.fitted.version, prepared.labels.task, choose_execution(spec, prepared, fault, ()))
