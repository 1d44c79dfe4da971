"""A worker's in-memory batches: every row once per epoch, a new order each epoch, validation in order."""

import numpy as np
import pytest

from mlray.train.batches import MemoryBatches, memory_per_worker_mb


def columns(rows: int) -> dict[str, np.ndarray]:
    return {"numeric": np.arange(rows * 3, dtype=np.float32).reshape(rows, 3),
            "categorical": np.arange(rows * 2, dtype=np.int64).reshape(rows, 2) % 7,
            "label": np.arange(rows, dtype=np.int64)}


def test_a_shuffled_epoch_holds_every_row_once_and_the_next_epoch_another_order():
    batches = MemoryBatches(columns(1000), batch_size=128, shuffle=True, seed=0)
    assert len(batches) == 8
    epochs = [[batch for batch in batches] for _ in range(2)]
    orders = [np.concatenate([b["label"].numpy() for b in epoch]) for epoch in epochs]
    for order in orders:
        assert sorted(order) == list(range(1000))
    assert not np.array_equal(orders[0], orders[1])
    first = epochs[0][0]  # the columns of a row stay together
    np.testing.assert_array_equal(first["numeric"][:, 0].numpy(), first["label"].numpy() * 3)
    assert [len(b["label"]) for b in epochs[0]] == [128] * 7 + [104]


def test_unshuffled_batches_are_the_rows_in_order_and_the_same_seed_repeats_the_shuffle():
    in_order = np.concatenate([b["label"].numpy() for b in MemoryBatches(columns(300), 64, shuffle=False, seed=0)])
    np.testing.assert_array_equal(in_order, np.arange(300))
    runs = [np.concatenate([b["label"].numpy() for b in MemoryBatches(columns(300), 64, True, seed=5)])
            for _ in range(2)]
    np.testing.assert_array_equal(*runs)


def test_a_shard_size_counts_each_input_kind_at_its_width():
    # 10 numeric float32 + 4 categorical int64 + an int64 label = 80 bytes a row; 2M rows over 2 workers
    assert memory_per_worker_mb(2_000_000, 2, numeric=10, categorical=4) == pytest.approx(80e6 / 2**20)
