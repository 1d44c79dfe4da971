"""A worker's batches: its Ray Data shard streamed every epoch, or read once into tensors when it fits.

Streaming (`StreamedBatches`) holds one block at a time and works for any size, but every epoch pays
Ray Data's iterator again, and Ray Train starts a coordinator actor per dataset to split it. A shard
that fits in memory (`MemoryBatches`) is handed to its worker as the object-store blocks of an equal
split the driver made (`split_blocks`), read once, and every epoch draws a new permutation of its row
indices, as a plain in-process training loop would. The driver decides which
(`memory_per_worker_mb` against `train.shard_in_memory_mb`).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

# Bytes one row of model inputs takes as tensors, per input kind (float32 numeric, int64 categorical and label).
NUMERIC_BYTES, CATEGORICAL_BYTES, LABEL_BYTES = 4, 8, 8


def memory_per_worker_mb(rows: int, workers: int, numeric: int, categorical: int) -> float:
    """What a worker's shard of `rows` (training plus validation) takes in memory as tensors."""
    per_row = numeric * NUMERIC_BYTES + categorical * CATEGORICAL_BYTES + LABEL_BYTES
    return math.ceil(rows / workers) * per_row / 2**20


class StreamedBatches:
    """A re-iterable view of a worker's dataset shard as torch batches (one Ray Data pass per epoch)."""

    def __init__(self, shard, batch_size: int, shuffle: bool, pin_memory: bool = False):
        self.shard, self.batch_size, self.shuffle, self.pin_memory = shard, batch_size, shuffle, pin_memory

    def __iter__(self):
        # numeric arrives float32, categorical int64, label int64 or float32: as `transform` made them
        return iter(self.shard.iter_torch_batches(
            batch_size=self.batch_size, local_shuffle_buffer_size=4 * self.batch_size if self.shuffle else None,
            pin_memory=self.pin_memory))


def split_blocks(dataset, workers: int) -> list[list]:
    """Each worker's blocks (object refs) of an equal split of a materialised dataset."""
    return [shard.to_arrow_refs() for shard in dataset.split(workers, equal=True)]


def read_blocks(refs: list) -> dict[str, np.ndarray]:
    """A worker's blocks fetched from the object store, as one NumPy array per column."""
    # Ray: only a worker reading its blocks needs it; importing this module (the train loop does) loads torch only
    import ray
    from ray.data.block import BlockAccessor

    columns: dict[str, list[np.ndarray]] = defaultdict(list)
    for block in ray.get(refs):
        for name, values in BlockAccessor.for_block(block).to_batch_format("numpy").items():
            columns[name].append(values)
    return {name: np.concatenate(parts) for name, parts in columns.items()}


class MemoryBatches:
    """Columns held as tensors (on `device`); every epoch a fresh permutation of the rows, or the rows in order."""

    def __init__(self, columns: dict[str, np.ndarray], batch_size: int, shuffle: bool, seed: int,
                 device: torch.device | None = None):
        self.tensors = {name: torch.from_numpy(values).to(device or "cpu") for name, values in columns.items()}
        self.rows = len(self.tensors["label"]) if self.tensors else 0
        self.batch_size, self.shuffle = batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def __iter__(self):
        if not self.shuffle:
            for start in range(0, self.rows, self.batch_size):
                yield {name: tensor[start:start + self.batch_size] for name, tensor in self.tensors.items()}
            return
        order = torch.randperm(self.rows, generator=self.generator)
        for start in range(0, self.rows, self.batch_size):
            index = order[start:start + self.batch_size].to(self.tensors["label"].device)
            yield {name: tensor[index] for name, tensor in self.tensors.items()}
