"""What each Ray Train worker runs: Lightning over its shard of the inputs, a checkpoint every epoch.

Every epoch each worker reports the epoch's losses; rank 0 attaches a Lightning checkpoint
(weights, optimiser, loop state). After a worker crash, or when a run with the same name is
submitted again, Ray Train hands the latest checkpoint back and Lightning resumes from it,
not from epoch 0. The same loop runs in the calling process (Ray Train's local mode: every
epoch's checkpoint kept in a folder) and in a sweep trial's own process (no Ray Train calls,
which Tune refuses there: each epoch goes to Tune with its checkpoint copied to the sweep's storage).

Every report also carries the wall-clock marks of the worker's start-up (`STARTUP_PREFIX`...):
when its process started, when torch and Lightning were imported, when its data was ready and
when the first batch began. Benchmarks read them to show where the seconds before training go.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import psutil
import pyarrow.fs as pafs
import pytorch_lightning as pl
import torch

from mlray.train.batches import MemoryBatches, StreamedBatches, read_blocks
from mlray.train.config import CHECKPOINT_FILE, METRICS_FILE, STARTUP_PREFIX, LoopConfig
from mlray.train.model import TabularModule

IMPORTED_AT = time.time()  # torch, Lightning and the model imported: the worker's import cost ends here


class EpochReport(pl.Callback):
    """Report every epoch to Ray Train (with a checkpoint from rank 0 and the start-up marks) and to MLflow."""

    def __init__(self, config: LoopConfig, marks: dict[str, float]):
        self.config, self.marks = config, marks
        self.client = None
        if config.tracking_uri and config.mlflow_run_id:
            from mlflow.tracking import MlflowClient  # heavy: MLflow (~2 s at import); only a tracked run's workers load it

            self.client = MlflowClient(tracking_uri=config.tracking_uri)

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch, batch_idx: int) -> None:
        self.marks.setdefault("first_batch", time.time())

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        losses = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics = losses | {STARTUP_PREFIX + name: at for name, at in self.marks.items()}
        metrics["epoch"] = trainer.current_epoch
        metrics["epoch_end_s"] = time.time()  # wall clock at the epoch's end: steady-state throughput for benchmarks
        rank = _world_rank(self.config)
        if rank == 0 and self.client is not None:
            for name, value in losses.items():
                self.client.log_metric(self.config.mlflow_run_id, name, value, step=trainer.current_epoch)
        if self.config.local_checkpoints:
            self._report_in_process(trainer, metrics)
        else:
            self._report_from_worker(trainer, metrics, rank)
            _maybe_crash(self.config, trainer.current_epoch)

    def _report_from_worker(self, trainer: pl.Trainer, metrics: dict, rank: int) -> None:
        import ray.train  # Ray Train: only inside a run; this module imports without Ray

        with tempfile.TemporaryDirectory(prefix="mlray-ckpt-") as folder:
            trainer.save_checkpoint(os.path.join(folder, CHECKPOINT_FILE))  # collective: every rank calls it
            checkpoint = ray.train.Checkpoint.from_directory(folder) if rank == 0 else None
            ray.train.report(metrics, checkpoint=checkpoint)

    def _report_in_process(self, trainer: pl.Trainer, metrics: dict) -> None:
        """Local mode keeps only the last report, so every epoch's checkpoint and metrics stay in the folder."""
        import ray.train  # Ray Train: only inside a run; this module imports without Ray

        folder = Path(self.config.local_checkpoints) / f"epoch_{trainer.current_epoch:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(str(folder / CHECKPOINT_FILE))
        (folder / METRICS_FILE).write_text(json.dumps(metrics))
        if self.config.trial_checkpoints:  # Tune refuses ray.train calls inside a trial
            _report_to_tune(folder, self.config.trial_checkpoints, metrics)
        else:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))


def _report_to_tune(folder: Path, destination: tuple[str, object], metrics: dict) -> None:
    """A sweep trial training in its own process: copy the epoch's checkpoint where the sweep's driver reads it, and
    report the epoch to Tune with its path (as Ray Train's Tune bridge would)."""
    from ray import tune  # Ray Tune: only a sweep trial's process reports to it

    root, filesystem = destination
    target = f"{root.rstrip('/')}/{folder.name}"
    filesystem = filesystem or pafs.LocalFileSystem()
    filesystem.create_dir(target, recursive=True)
    pafs.copy_files(str(folder), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=filesystem)
    tune.report(metrics | {"checkpoint_path": target})


def _maybe_crash(config: LoopConfig, epoch: int) -> None:
    fault = config.fault
    if fault is None or epoch != fault.epoch or Path(fault.marker).exists():
        return
    import ray.train  # Ray Train: only inside a run; this module imports without Ray

    if ray.train.get_context().get_world_rank() == 0:
        Path(fault.marker).write_text(str(epoch))
        # The Train controller collects reports by polling workers every health-check interval; a report still
        # queued on a dead worker is lost. Wait until this epoch's checkpoint has surely been collected, so the
        # fault tests a crash after a registered checkpoint, not a race with the poll.
        time.sleep(2 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")) + 1)
        os._exit(1)  # the process dies as a crashed worker would


def _world_rank(config: LoopConfig) -> int:
    """This worker's rank; a sweep trial training in its own process is the only one (and may not ask Ray Train)."""
    import ray.train  # Ray Train: only inside a run; this module imports without Ray

    return 0 if config.trial_checkpoints else ray.train.get_context().get_world_rank()


def _resume_path() -> str | None:
    """The Lightning checkpoint Ray Train restored, copied to a local file."""
    import ray.train  # Ray Train: only inside a run; this module imports without Ray

    restored = ray.train.get_checkpoint()
    if restored is None:
        return None
    local = Path(tempfile.mkdtemp(prefix="mlray-resume-"))
    with restored.as_directory() as folder:
        shutil.copy(Path(folder) / CHECKPOINT_FILE, local / CHECKPOINT_FILE)
    return str(local / CHECKPOINT_FILE)


def _startup_marks() -> dict[str, float]:
    return {"process": psutil.Process().create_time(), "imported": IMPORTED_AT, "loop": time.time()}


def _batches(config: LoopConfig, split: str, shuffle: bool):
    import ray.train  # Ray Train: only inside a run; this module imports without Ray

    batch = config.train.batch_size
    cuda = torch.cuda.is_available()  # Ray shows a worker only the GPUs it was given
    if config.shards is not None:  # on a GPU the whole shard moves to the device once
        columns = read_blocks(config.shards[split][_world_rank(config)])
        device = torch.device("cuda", torch.cuda.current_device()) if cuda else None
        return MemoryBatches(columns, batch, shuffle, config.train.seed, device)
    return StreamedBatches(ray.train.get_dataset_shard(split), batch, shuffle, pin_memory=cuda)


def train_loop_per_worker(config: LoopConfig) -> None:
    # Ray Train: only inside a run; this module imports without Ray
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    marks = _startup_marks()
    local = config.local_checkpoints is not None  # in the calling process: no process group
    if local:  # Lightning's notices would land in the caller's output (a CLI's --json among them)
        for name in ("pytorch_lightning", "lightning_fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    holds_cpus = not local or config.trial_checkpoints  # a worker, or a trial's process: it holds cpus_per_worker
    if holds_cpus and not torch.cuda.is_available():  # as many intra-op threads as CPUs it holds
        torch.set_num_threads(max(1, round(config.train.cpus_per_worker)))
    pl.seed_everything(config.train.seed, workers=True)
    train_batches, validation_batches = _batches(config, "train", True), _batches(config, "validation", False)
    marks["data"] = time.time()
    module = TabularModule(config.numeric, config.cardinalities, config.task, config.classes, config.model,
                           config.train)
    callbacks: list[pl.Callback] = [EpochReport(config, marks)]
    if config.train.early_stopping is not None:
        callbacks.append(pl.callbacks.EarlyStopping(monitor="val_loss", patience=config.train.early_stopping.patience,
                                                    min_delta=config.train.early_stopping.min_delta))
    distributed = {} if local else {"strategy": RayDDPStrategy(), "plugins": [RayLightningEnvironment()]}
    trainer = pl.Trainer(
        max_epochs=config.train.epochs, accelerator="auto", devices="auto" if not local else 1, callbacks=callbacks,
        precision=config.precision, enable_checkpointing=False, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, **distributed,
    )
    if not local:
        trainer = prepare_trainer(trainer)
    resume = None if config.trial_checkpoints else _resume_path()
    marks["trainer"] = time.time()
    with warnings.catch_warnings():
        if local:  # nor its deprecation notices
            warnings.filterwarnings("ignore", module=r"pytorch_lightning\.")
        trainer.fit(module, train_dataloaders=train_batches, val_dataloaders=validation_batches, ckpt_path=resume)
