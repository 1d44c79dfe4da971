"""`mlray tune`: a Ray Tune sweep whose trials are Ray Train runs; the best trial is registered.

Each trial is a Tune function trainable that runs Ray Train for its sampled settings and reports every
epoch to Tune, so ASHA can stop weak trials early. A one-worker CPU trial trains in its own process
(Ray Train's local mode: no controller or worker processes to start) and copies each epoch's
checkpoint to the sweep's storage; a multi-worker or GPU trial builds a `TorchTrainer` whose
reports `TuneReportCallback` forwards.
Every trial is an MLflow child run of one parent run. The data is prepared once (validated,
features fitted, labels settled, split) and shared by all trials. Trials are ranked by
validation loss; the best epoch checkpoint of the best trial is evaluated, packaged, registered
and gated exactly as `mlray train` does.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mlflow
import ray
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from mlray.errors import UserError
from mlray.registry.models import Registry
from mlray.spec import ProjectSpec
from mlray.train.config import STARTUP_PREFIX
from mlray.train.data import Prepared
from mlray.train.execution import require_usable_gpus, training_inputs, trials_train_in_process, use_gpu
from mlray.train.progress import Progress
from mlray.train.run import (
    TrainOutcome,
    checkpoint_weights,
    fit_on_ray,
    lineage_tags,
    log_inputs,
    prepare,
    ray_storage,
    register,
    trained_epochs,
)

log = logging.getLogger(__name__)
METRIC, MODE = "val_loss", "min"
TRIAL_DRIVER_CPUS = 0.1  # a trial on Ray Train workers only waits on its TorchTrainer; the workers hold the CPUs
TRIAL_TAG = "mlray.trial_id"


@dataclass
class TrialSummary:
    trial_id: str
    status: str  # 'finished', 'stopped early' or 'error'
    params: dict[str, Any]
    epochs: int
    best_val_loss: float | None
    run_id: str | None = None
    error: str | None = None
    training_s: float | None = None  # from its first batch to its last epoch's end


@dataclass
class SweepOutcome:
    sweep: str
    parent_run_id: str
    trials: list[TrialSummary]
    best_trial: str
    best_params: dict[str, Any]
    model: TrainOutcome
    concurrency: int
    sweep_s: float = 0.0  # wall time of the trials, from the first one's start to the last one's end


def search_space(spec: ProjectSpec) -> dict:
    """The spec's search space as Ray Tune domains (checked when the spec loaded; here it only must not be empty)."""
    from ray import tune  # Ray Tune: imported when a sweep runs, not with this module

    if not spec.tune.space:
        raise UserError("tune.space is empty: declare what to search, e.g. train.learning_rate: {loguniform: [1e-4, 1e-2]}")
    space = {}
    for key, (kind, args) in spec.tune.dimensions().items():
        if kind == "choice":
            space[key] = tune.grid_search(args) if spec.tune.algorithm == "grid" else tune.choice(args)
        elif kind == "uniform":
            space[key] = tune.uniform(*args)
        elif kind == "loguniform":
            space[key] = tune.loguniform(*args)
        else:  # int: both bounds included
            space[key] = tune.randint(args[0], args[1] + 1)
    return space


def with_overrides(spec: ProjectSpec, params: dict[str, Any]) -> ProjectSpec:
    """The spec with a trial's sampled settings ('train.learning_rate': 0.003, ...) applied and re-validated."""
    sections: dict[str, dict] = {}
    for key, value in params.items():
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = value
    updated = {s: getattr(spec, s).model_validate(getattr(spec, s).model_dump() | v) for s, v in sections.items()}
    copy = spec.model_copy(update=updated)
    copy._path = spec.path
    return copy


def trial_cpus(spec: ProjectSpec) -> float:
    """What a trial's own process holds: the one worker's CPUs when it trains there, else a driver's share."""
    return spec.train.cpus_per_worker if trials_train_in_process(spec) else TRIAL_DRIVER_CPUS


def concurrency(spec: ProjectSpec) -> int:
    """How many trials run at once: the spec's bound, else as many as the cluster's CPUs (and GPUs) fit."""
    if spec.tune.max_concurrent:
        return spec.tune.max_concurrent
    resources = ray.cluster_resources()
    per_trial = trial_cpus(spec) + (0 if trials_train_in_process(spec) else
                                    spec.train.num_workers * spec.train.cpus_per_worker)
    fits = math.floor(resources.get("CPU", 1) / per_trial)
    if use_gpu(spec.train.use_gpu):
        fits = min(fits, math.floor(resources.get("GPU", 0) / spec.train.num_workers))
    return max(1, fits)


def run_trial(params: dict, spec: ProjectSpec, prepared: Prepared, sweep: str, parent_run_id: str, tags: dict) -> None:
    """One Tune trial: a child MLflow run and a Ray Train run with the sampled settings."""
    # Ray Tune: imported when a sweep runs, not with this module
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    registry = Registry(spec)
    run = registry.client.create_run(registry.experiment_id, run_name=f"{sweep}-{trial_id}",
                                     tags=tags | {MLFLOW_PARENT_RUN_ID: parent_run_id, TRIAL_TAG: trial_id})
    for key, value in params.items():
        registry.client.log_param(run.info.run_id, key, value)
    name = f"{sweep}-{trial_id}"
    if trials_train_in_process(spec):
        storage = ray_storage(spec.platform, "tune")
        folder = f"{storage['storage_path'].rstrip('/')}/{sweep}/{trial_id}-checkpoints"
        fit_on_ray(with_overrides(spec, params), prepared, name, run.info.run_id,
                   trial_checkpoints=(folder, storage.get("storage_filesystem")))
    else:
        fit_on_ray(with_overrides(spec, params), prepared, name, run.info.run_id, callbacks=(TuneReportCallback(),))
    registry.client.set_terminated(run.info.run_id)


def _trial_progress(total: int, progress: Progress | None):
    """A Tune callback (it runs in the driver) counting finished trials."""
    from ray.tune import Callback  # Ray Tune: imported when a sweep runs, not with this module

    class TrialsDone(Callback):
        done = 0

        def _count(self) -> None:
            self.done += 1
            if progress is not None:
                progress(self.done, total)

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._count()

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._count()

        def __reduce__(self):  # Tune pickles its callbacks for a restore; a progress bar holds locks and is not kept
            return _trial_progress, (total, None)

    return TrialsDone()


def _trial_id(result) -> str:
    return (result.metrics or {}).get("trial_id") or Path(result.path).name


def _summaries(results, child_runs: dict[str, str], epochs: int) -> list[TrialSummary]:
    summaries = []
    for result in results:
        frame = result.metrics_dataframe
        reported = 0 if frame is None or frame.empty else len(frame)
        best = float(frame[METRIC].min()) if reported and METRIC in frame else None
        status = "error" if result.error else ("finished" if reported >= epochs else "stopped early")
        error = str(result.error).strip().splitlines()[0] if result.error else None
        summaries.append(TrialSummary(_trial_id(result), status, dict(result.config), reported, best,
                                      child_runs.get(_trial_id(result)), error, _training_seconds(frame)))
    return summaries


def _training_seconds(frame) -> float | None:
    """A trial's time training: from its first batch to its last reported epoch's end (its start-up excluded)."""
    first_batch = STARTUP_PREFIX + "first_batch"
    if frame is None or frame.empty or first_batch not in frame or "epoch_end_s" not in frame:
        return None
    return float(frame["epoch_end_s"].max() - frame[first_batch].min())


def _best_checkpoint(results) -> tuple[str, str]:
    """(trial id, checkpoint path) of the epoch with the lowest validation loss over every trial."""
    best = None
    for result in results:
        frame = result.metrics_dataframe
        if frame is None or frame.empty or "checkpoint_path" not in frame:
            continue
        rows = frame[frame["checkpoint_path"].notna()]
        if not rows.empty:
            row = rows.loc[rows[METRIC].idxmin()]
            if best is None or row[METRIC] < best[2]:
                best = (_trial_id(result), row["checkpoint_path"], row[METRIC])
    if best is None:
        errors = [str(r.error).strip().splitlines()[0] for r in results if r.error]
        raise RuntimeError(f"no trial of the sweep produced a checkpoint; first error: {errors[0] if errors else 'none'}")
    return best[0], best[1]


def _close_child_runs(registry: Registry, parent_run_id: str) -> dict[str, str]:
    """Child runs by trial id; runs still open belong to trials ASHA stopped (their process was ended): KILLED."""
    children = registry.client.search_runs([registry.experiment_id], f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_run_id}'",
                                           max_results=1000)
    for run in children:
        if run.info.status == "RUNNING":
            registry.client.set_terminated(run.info.run_id, "KILLED")
    return {run.data.tags.get(TRIAL_TAG): run.info.run_id for run in children}


def _tune(spec: ProjectSpec, prepared: Prepared, sweep: str, parent_run_id: str, tags: dict, parallel: int,
          progress: Progress | None):
    # Ray Tune: imported when a sweep runs, not with this module
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if use_gpu(spec.train.use_gpu):
        require_usable_gpus()  # once, here, rather than in every trial
    space = search_space(spec)
    grid_points = math.prod(len(v["grid_search"]) for v in space.values() if isinstance(v, dict) and "grid_search" in v)
    asha = spec.tune.scheduler
    scheduler = ASHAScheduler(max_t=spec.train.epochs, grace_period=min(asha.grace_period, spec.train.epochs),
                              reduction_factor=asha.reduction_factor) if asha else FIFOScheduler()
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, spec=spec, prepared=prepared, sweep=sweep, parent_run_id=parent_run_id,
                             tags=tags),
        {"CPU": trial_cpus(spec)})
    tuner = tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, num_samples=spec.tune.trials, scheduler=scheduler,
            # max_concurrent_trials is ignored when a search algorithm instance is given: bound it here
            search_alg=BasicVariantGenerator(max_concurrent=parallel, random_state=spec.train.seed)),
        run_config=tune.RunConfig(name=sweep, **ray_storage(spec.platform, "tune"), verbose=0,
                                  callbacks=[_trial_progress(spec.tune.trials * grid_points, progress)]),
    )
    with _silent_tune_reporter():
        return tuner.fit()


@contextmanager
def _silent_tune_reporter():
    """Tune's default reporter prints an experiment table to stdout even at verbose=0 (which breaks
    `--json`); its legacy reporter honours verbose=0. The library prints nothing; the CLI draws progress."""
    saved = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved


def default_sweep_name(spec: ProjectSpec) -> str:
    return f"{spec.name}-sweep-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"


def tune_model(spec: ProjectSpec, version: int | None = None, sweep: str | None = None,
               progress: Progress | None = None) -> SweepOutcome:
    """Sweep the spec's search space on a pinned snapshot; register the best trial (through the gate)."""
    search_space(spec)  # a wrong or empty space fails here, before any data work or trial
    prepared = prepare(spec, version)
    training_inputs(spec, prepared)  # with train.cache_inputs: materialised once, here, and shared by every trial
    registry = Registry(spec)
    sweep = sweep or default_sweep_name(spec)
    tags = lineage_tags(spec, prepared)
    parallel = concurrency(spec)
    with mlflow.start_run(run_name=sweep, experiment_id=registry.experiment_id) as parent:
        log_inputs(spec, tags)
        mlflow.set_tags({"mlray.sweep": sweep, "mlray.sweep_concurrency": str(parallel)})
        mlflow.log_dict(spec.tune.model_dump(mode="json"), "search_space.json")
        started = time.monotonic()
        results = _tune(spec, prepared, sweep, parent.info.run_id, tags, parallel, progress)
        sweep_s = time.monotonic() - started
        children = _close_child_runs(registry, parent.info.run_id)
        trials = _summaries(results, children, spec.train.epochs)
        best_id, checkpoint_path = _best_checkpoint(results)
        best_trial = next(t for t in trials if t.trial_id == best_id)
        mlflow.set_tags({"mlray.best_trial": best_trial.trial_id, "mlray.best_run_id": best_trial.run_id})
        mlflow.log_metric("best_val_loss", best_trial.best_val_loss)
        outcome = _register_best(spec, prepared, registry, tags, best_trial, checkpoint_path, sweep)
    return SweepOutcome(sweep, parent.info.run_id, trials, best_trial.trial_id, best_trial.params, outcome, parallel,
                        sweep_s)


def _register_best(spec: ProjectSpec, prepared: Prepared, registry: Registry, tags: dict, best: TrialSummary,
                   checkpoint_path: str, sweep: str) -> TrainOutcome:
    """Evaluate, package, register and gate the best trial's best checkpoint, in that trial's child run."""
    from ray.train import Checkpoint  # Ray Train: imported when a sweep ends, not with this module

    trial_spec = with_overrides(spec, best.params)
    checkpoint = Checkpoint(checkpoint_path, filesystem=ray_storage(spec.platform, "tune").get("storage_filesystem"))
    with mlflow.start_run(run_id=best.run_id, nested=True):
        version, status, decision, metrics, slices = register(trial_spec, prepared, registry, tags,
                                                              checkpoint_weights(checkpoint))
    return TrainOutcome(best.run_id, f"{sweep}-{best.trial_id}", registry.model_name, version, status, decision.reasons,
                        metrics, slices, trained_epochs(registry, best.run_id), prepared.table_version,
                        prepared.fitted.version, prepared.labels.task)
