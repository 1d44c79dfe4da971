"""Reducing a dataset block by block: each block becomes a small partial, the driver merges them.

Validation and feature fitting both work this way, alone or fused into one pass over a table.
A Ray Dataset is reduced on the cluster; an in-memory Arrow table is one block, in process.
Partials come back in a fixed order (sorted by their bytes), so merging is deterministic.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable

import pyarrow as pa

Partial = Callable[[pa.Table], Any]


def _pickled(batch: pa.Table, reducers: dict[str, tuple[Callable[..., Any], dict]]) -> pa.Table:
    partial = {key: fn(batch, **kwargs) for key, (fn, kwargs) in reducers.items()}
    return pa.table({"partial": pa.array([pickle.dumps(partial)], pa.binary())})


def reduce_blocks(data, reducers: dict[str, tuple[Callable[..., Any], dict]]) -> dict[str, list[Any]]:
    """Run every reducer `fn(batch, **kwargs)` over each block of `data` in one pass.

    `data` is a Ray Dataset or a pyarrow Table; returns each reducer's partials, in a fixed order."""
    if isinstance(data, pa.Table):
        blocks = [{key: fn(data, **kwargs) for key, (fn, kwargs) in reducers.items()}]
    else:
        rows = data.map_batches(_pickled, fn_kwargs={"reducers": reducers}, batch_format="pyarrow",
                                batch_size=None).iter_rows()
        blocks = [pickle.loads(blob) for blob in sorted(row["partial"] for row in rows)]
    return {key: [block[key] for block in blocks] for key in reducers}
