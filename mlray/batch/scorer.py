"""Scoring batches of input rows into output rows: what the driver (small inputs) and every actor of the pool run.

This module imports torch, the feature transform and pyarrow, not MLflow: an actor of the pool is
handed the model as a `Scoring` (tensors and fitted features) and never opens the registry.
"""

from __future__ import annotations

import pyarrow as pa

from mlray.lake.io import conform
from mlray.registry.scoring import Scoring


def scored_rows(ids: pa.ChunkedArray | pa.Array, predictions: dict, lineage: dict, schema: pa.Schema,
                name: str) -> pa.Table:
    """One batch of output rows: ids, the prediction columns, and the lineage values repeated, as `schema`."""
    columns = {schema.names[0]: ids, **predictions}
    columns.update({key: pa.repeat(pa.scalar(value, schema.field(key).type), len(ids)) for key, value in lineage.items()})
    return conform(pa.table(columns), schema, name)


def score_batch(scoring: Scoring, batch: pa.Table, lineage: dict, schema: pa.Schema, out: str) -> pa.Table:
    """Input rows (the id column first) → output rows of table `out`."""
    return scored_rows(batch.column(schema.names[0]), scoring.arrays(batch), lineage, schema, out)


class Scorer:
    """One actor of the pool: holds the model the driver loaded, scores Arrow batches."""

    def __init__(self, scoring: Scoring, schema: pa.Schema, lineage: dict, out_table: str):
        self.scoring, self.schema, self.lineage, self.out_table = scoring, schema, lineage, out_table

    def __call__(self, batch: pa.Table) -> pa.Table:
        return score_batch(self.scoring, batch, self.lineage, self.schema, self.out_table)
