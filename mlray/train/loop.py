"""What each Ray Train worker runs: Lightning over its Ray Data shards, a checkpoint every epoch.

Every epoch each worker reports the epoch's losses; rank 0 attaches a Lightning checkpoint
(weights, optimiser, loop state). After a worker crash, or when a run with the same name is
submitted again, Ray Train hands the latest checkpoint back and Lightning resumes from it,
not from epoch 0.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl

from mlray.spec import ModelSpec, TrainSpec
from mlray.train.model import TabularModule

CHECKPOINT_FILE = "checkpoint.ckpt"


@dataclass(frozen=True)
class LoopConfig:
    """What a worker needs, small and picklable."""

    model: ModelSpec
    train: TrainSpec
    task: str
    classes: int
    numeric: int
    cardinalities: list[int]
    precision: str
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    fault: "Fault | None" = None


@dataclass(frozen=True)
class Fault:
    """Fault injection (for the resume tests): rank 0 dies once after reporting `epoch`, leaving `marker`."""

    epoch: int
    marker: str


class ShardBatches:
    """A re-iterable view of a worker's dataset shard as torch batches (one pass per epoch)."""

    def __init__(self, shard, batch_size: int, shuffle: bool):
        self.shard, self.batch_size, self.shuffle = shard, batch_size, shuffle

    def __iter__(self):
        # numeric arrives float32, categorical int64, label int64 or float32: as `transform` made them
        return iter(self.shard.iter_torch_batches(
            batch_size=self.batch_size, local_shuffle_buffer_size=4 * self.batch_size if self.shuffle else None))


class EpochReport(pl.Callback):
    """Report every epoch to Ray Train (with a checkpoint from rank 0) and to MLflow."""

    def __init__(self, config: LoopConfig):
        self.config = config
        self.client = None
        if config.tracking_uri and config.mlflow_run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=config.tracking_uri)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        import ray.train

        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics["epoch"] = trainer.current_epoch
        metrics["epoch_end_s"] = time.time()  # wall clock at the epoch's end: steady-state throughput for benchmarks
        with tempfile.TemporaryDirectory(prefix="mlray-ckpt-") as folder:
            trainer.save_checkpoint(os.path.join(folder, CHECKPOINT_FILE))  # collective: every rank calls it
            rank = ray.train.get_context().get_world_rank()
            checkpoint = ray.train.Checkpoint.from_directory(folder) if rank == 0 else None
            if rank == 0 and self.client is not None:
                for name, value in metrics.items():
                    if name not in ("epoch", "epoch_end_s"):
                        self.client.log_metric(self.config.mlflow_run_id, name, value, step=trainer.current_epoch)
            ray.train.report(metrics, checkpoint=checkpoint)
        _maybe_crash(self.config, trainer.current_epoch)


def _maybe_crash(config: LoopConfig, epoch: int) -> None:
    fault = config.fault
    if fault is None or epoch != fault.epoch or Path(fault.marker).exists():
        return
    import ray.train

    if ray.train.get_context().get_world_rank() == 0:
        Path(fault.marker).write_text(str(epoch))
        # The Train controller collects reports by polling workers every health-check interval; a report still
        # queued on a dead worker is lost. Wait until this epoch's checkpoint has surely been collected, so the
        # fault tests a crash after a registered checkpoint, not a race with the poll.
        time.sleep(2 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")) + 1)
        os._exit(1)  # the process dies as a crashed worker would


def _resume_path() -> str | None:
    """The Lightning checkpoint Ray Train restored, copied to a local file."""
    import ray.train

    restored = ray.train.get_checkpoint()
    if restored is None:
        return None
    local = Path(tempfile.mkdtemp(prefix="mlray-resume-"))
    with restored.as_directory() as folder:
        shutil.copy(Path(folder) / CHECKPOINT_FILE, local / CHECKPOINT_FILE)
    return str(local / CHECKPOINT_FILE)


def train_loop_per_worker(config: LoopConfig) -> None:
    import ray.train
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    pl.seed_everything(config.train.seed, workers=True)
    module = TabularModule(config.numeric, config.cardinalities, config.task, config.classes, config.model,
                           config.train)
    callbacks: list[pl.Callback] = [EpochReport(config)]
    if config.train.early_stopping is not None:
        callbacks.append(pl.callbacks.EarlyStopping(monitor="val_loss", patience=config.train.early_stopping.patience,
                                                    min_delta=config.train.early_stopping.min_delta))
    trainer = pl.Trainer(
        max_epochs=config.train.epochs, accelerator="auto", devices="auto", strategy=RayDDPStrategy(),
        plugins=[RayLightningEnvironment()], callbacks=callbacks, precision=config.precision,
        enable_checkpointing=False, logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer = prepare_trainer(trainer)
    batch = config.train.batch_size
    trainer.fit(module,
                train_dataloaders=ShardBatches(ray.train.get_dataset_shard("train"), batch, shuffle=True),
                val_dataloaders=ShardBatches(ray.train.get_dataset_shard("validation"), batch, shuffle=False),
                ckpt_path=_resume_path())
