"""What the driver hands a Ray Train run, in a module that imports neither torch nor Lightning.

Ray Train's controller unpickles the loop's config (it shows it on the dashboard); were the config
defined beside the loop, the controller would import Lightning too, seconds of every run's start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlray.spec import ModelSpec, TrainSpec

CHECKPOINT_FILE = "checkpoint.ckpt"
METRICS_FILE = "metrics.json"
STARTUP_PREFIX = "startup."  # the report keys of the workers' start-up marks (wall clock)


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
    # per split, each worker's blocks when its shard fits in memory (mlray.train.batches); None: stream
    shards: dict[str, list[list]] | None = None
    local_checkpoints: str | None = None  # Ray Train's local mode (in the calling process): keep checkpoints here
    # a sweep trial training in its own process: (folder, pyarrow filesystem or None) its checkpoints are copied to,
    # where the sweep's driver reads the best one; every epoch is reported to Tune with its checkpoint's path
    trial_checkpoints: tuple[str, object] | None = None
    # out of the repr: Ray's dashboard shows the train loop config as its text, and the URI may carry a password
    tracking_uri: str | None = field(default=None, repr=False)
    mlflow_run_id: str | None = None
    fault: "Fault | None" = None


@dataclass(frozen=True)
class Fault:
    """Fault injection (for the resume tests): rank 0 dies once after reporting `epoch`, leaving `marker`."""

    epoch: int
    marker: str
