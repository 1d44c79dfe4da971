"""Where a training run executes and how its workers get their data.

- Ray Train workers, or Ray Train's local mode in the calling process (`train.execution`; `auto`
  trains small tables without a GPU locally: starting a controller and workers, processes that
  import torch and Lightning, costs more than training them).
- A worker's shard held in memory (handed over once as object-store blocks) or streamed from Ray
  Data every epoch (`train.shard_in_memory_mb`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.data.dataset import MaterializedDataset

from mlray.errors import UserError
from mlray.spec import ProjectSpec
from mlray.train.batches import memory_per_worker_mb, split_blocks
from mlray.train.config import METRICS_FILE, Fault
from mlray.train.data import Prepared

LOCAL_TRAIN_ROWS = 100_000  # `train.execution: auto` trains up to this many training rows in the calling process
# Ray Train settings mlray starts runs with unless the environment sets them: reports are collected and the end of a
# run is noticed every half second rather than every 2 s, and no preemption-watcher actor is started (one process
# less to boot per run; a worker lost to a preempted node is still restarted from its checkpoint).
RAY_TRAIN_DEFAULTS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


GPU_CHECK_TIMEOUT_S = 600.0  # an autoscaling cluster may take minutes to start a GPU node


def use_gpu(setting) -> bool:
    if setting == "auto":
        return ray.cluster_resources().get("GPU", 0) >= 1
    return bool(setting)


@ray.remote(num_gpus=1, num_cpus=0, max_retries=0)
def _cuda_where_a_gpu_is() -> tuple[bool, str]:
    import torch  # the node's own torch: the GPU image's, or a CPU build on a node that only advertises a GPU

    detail = (f"torch {torch.__version__} ({'CUDA ' + torch.version.cuda if torch.version.cuda else 'a CPU build'}), "
              f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}")
    return torch.cuda.is_available(), detail


def require_usable_gpus() -> None:
    """Refuse, in one line and before any worker starts, a GPU run on a GPU that torch cannot use where it is (a CPU
    build of torch, no driver, a node that advertises a GPU it has not got): Lightning would otherwise train on the
    CPU while holding the GPU, or fail deep in CUDA."""
    probe = _cuda_where_a_gpu_is.remote()
    try:
        usable, detail = ray.get(probe, timeout=GPU_CHECK_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(probe)  # or the autoscaler keeps asking for a GPU node
        raise UserError(f"train.use_gpu: no node with a free GPU answered within {GPU_CHECK_TIMEOUT_S:.0f} s "
                        f"(the cluster has {ray.cluster_resources().get('GPU', 0):g} GPUs)") from None
    except ray.exceptions.RayError as error:  # e.g. the GPU node was reclaimed, or has no torch
        lines = str(error).strip().splitlines()
        raise UserError(f"train.use_gpu: the GPU check on a GPU node failed: "
                        f"{lines[-1][:300] if lines else type(error).__name__}") from None
    if not usable:
        raise UserError(f"train.use_gpu: the cluster advertises {ray.cluster_resources().get('GPU', 0):g} GPUs, but "
                        f"torch on a GPU node cannot use them ({detail}): run GPU nodes on mlray's CUDA image "
                        f"(`make image`, the -gpu target), or set train.use_gpu: false")


def training_inputs(spec: ProjectSpec, prepared: Prepared) -> dict:
    """The train and validation inputs; with train.cache_inputs (or when shards fit in memory), computed once and
    kept in the object store (shared by every epoch, every restart after a crash, and every trial of a sweep)."""
    wanted = ("train", "validation")
    if spec.train.cache_inputs or shard_in_memory(spec, prepared):
        for name in wanted:
            if not isinstance(prepared.datasets[name], MaterializedDataset):
                prepared.datasets[name] = prepared.datasets[name].materialize()
    return {name: prepared.datasets[name] for name in wanted}


def shard_in_memory(spec: ProjectSpec, prepared: Prepared) -> bool:
    """Whether each worker's shard of training and validation inputs fits `train.shard_in_memory_mb`."""
    rows = prepared.split_rows["train"] + prepared.split_rows["validation"]
    size = memory_per_worker_mb(rows, spec.train.num_workers, len(prepared.fitted.numeric_names),
                                len(prepared.fitted.cardinalities))
    return size <= spec.train.shard_in_memory_mb


def worker_inputs(spec: ProjectSpec, prepared: Prepared, local: bool) -> tuple[dict | None, dict | None]:
    """(blocks per worker per split, None) when shards fit in memory or the run is local, else (None, the datasets
    Ray Train streams)."""
    inputs = training_inputs(spec, prepared)
    if not (local or shard_in_memory(spec, prepared)):
        return None, inputs
    workers = 1 if local else spec.train.num_workers
    return {name: split_blocks(dataset, workers) for name, dataset in inputs.items()}, None


def trials_train_in_process(spec: ProjectSpec) -> bool:
    """Whether a sweep's trials train in their own process (Ray Train's local mode): one worker on CPUs needs no
    second process, unless `train.execution: ray` asks for Ray Train workers."""
    return spec.train.num_workers == 1 and spec.train.execution != "ray" and not use_gpu(spec.train.use_gpu)


def choose_execution(spec: ProjectSpec, prepared: Prepared, fault: Fault | None, callbacks: tuple) -> str:
    """'local' (Ray Train's local mode, in this process) or 'ray' (Ray Train workers), as `train.execution` says;
    'auto' runs small tables without a GPU locally. Fault injection and Ray Train callbacks need workers."""
    if fault is not None or callbacks:
        return "ray"
    if spec.train.execution != "auto":
        return spec.train.execution
    small = prepared.split_rows["train"] <= LOCAL_TRAIN_ROWS
    return "local" if small and not use_gpu(spec.train.use_gpu) else "ray"


@dataclass
class LocalResult:
    """What a local run leaves, shaped like the parts of Ray Train's `Result` mlray reads."""

    best_checkpoints: list  # (Checkpoint, metrics) of every epoch
    checkpoint: object  # the last epoch's Checkpoint
    folder: tempfile.TemporaryDirectory  # removed with this result

    @classmethod
    def read(cls, folder: tempfile.TemporaryDirectory) -> "LocalResult":
        from ray.train import Checkpoint  # Ray Train: imported when a run ends, not with this module

        epochs = sorted(Path(folder.name).glob("epoch_*"))
        kept = [(Checkpoint.from_directory(str(path)), json.loads((path / METRICS_FILE).read_text())) for path in epochs]
        return cls(kept, kept[-1][0] if kept else None, folder)
