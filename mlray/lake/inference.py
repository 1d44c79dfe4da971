"""The inference log and the feedback labels as tables: their schemas, and reading what was appended since a version.

Serving writes both (`mlray.serve.logbook`); the rollout analysis and the monitor read them. The log keeps every
scored row's raw inputs as one typed struct column, `inputs` (the train table's columns, each nullable), so drift
checks and joins are columnar reads with no parsing, and an input column can never collide with the log's own.
Labels are appended in buffered flushes and may repeat a `(request_id, row)`: readers keep the first.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from mlray.errors import UserError
from mlray.lake.schema import ARROW_TYPES
from mlray.lake.tables import Lake
from mlray.spec import TableSpec

INPUTS = "inputs"
LABEL_KEY = ["request_id", "row"]

LABELS_SCHEMA = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("row", pa.int32(), nullable=False),
    pa.field("label", pa.string(), nullable=False),  # as text: readers cast it to the label column's type
    pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
])


def inputs_type(table: TableSpec, columns: list[str]) -> pa.StructType:
    """The `inputs` struct: each request column with the lake's type, nullable (a request may leave it out)."""
    return pa.struct([pa.field(c, ARROW_TYPES[table.columns[c].type]) for c in columns])


def inference_log_schema(table: TableSpec, columns: list[str]) -> pa.Schema:
    return pa.schema([
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("feature_version", pa.string()),
        pa.field("shadow", pa.bool_(), nullable=False),  # a mirrored call whose answer was not returned
        pa.field("sticky_key", pa.string()),
        pa.field(INPUTS, inputs_type(table, columns)),
        pa.field("prediction", pa.string()),  # JSON
        pa.field("score", pa.float64()),  # binary score or top-class probability; regression: the prediction
        pa.field("latency_ms", pa.float64()),
        pa.field("error", pa.string()),
        # added later: at the end, so an older log gains them in place (`Lake.create(add_missing=True)`)
        pa.field("key_fingerprint", pa.string()),  # which API key made the request (never the key or its hash)
        pa.field("pinned", pa.bool_()),  # pinned to a version by the pin header: not canary traffic
        pa.field("probabilities", pa.list_(pa.float64())),  # multiclass: every class's, in the package's class order
    ])


def rejects_name(table: str) -> str:
    """Where rows that `table` cannot hold go, with their reason: `<table>_rejects`."""
    return f"{table}_rejects"


REJECTS_SCHEMA = pa.schema([
    pa.field("request_id", pa.string()),
    pa.field("row", pa.int64()),  # as sent: a row past int32 is one reason to be here
    pa.field("reason", pa.string(), nullable=False),
    pa.field("raw", pa.string(), nullable=False),  # the record as JSON text
    pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
])


def appended_since(lake: Lake, name: str, version: int, columns: list[str] | None = None) -> pa.Table | None:
    """Rows appended to `name` after `version` (-1: all), with `_commit_version`; None when the table does not exist.

    Only appends count: the rows a retention delete removes, and the files a compaction rewrites, are not new. The
    files of those appends must still be stored: upkeep vacuums compacted ones once its retention has passed, so a
    reader further behind gets a UserError."""
    if not lake.exists(name):
        return None
    try:
        changes = lake.changes_since(name, version, columns)
    except (pa.ArrowInvalid, OSError) as exc:
        if "not found" not in str(exc):
            raise
        raise UserError(f"table '{name}': the rows appended after version {version} are no longer all stored (upkeep "
                        f"vacuumed files compacted longer than its retention ago); read from a later version") from None
    return changes.filter(pc.equal(changes.column("_change_type"), "insert")).drop_columns(["_change_type"])


def dedupe_labels(labels: pa.Table) -> pa.Table:
    """The first label of each `(request_id, row)` (by `at`, then order of arrival); a label sent twice counts once."""
    if labels.num_rows == 0:
        return labels
    ordered = labels.append_column("_order", pa.array(range(labels.num_rows), pa.int64()))
    ordered = ordered.sort_by([("at", "ascending"), ("_order", "ascending")])
    first = ordered.group_by(LABEL_KEY, use_threads=False).aggregate([("_order", "first")])
    keep = pc.is_in(ordered.column("_order"), value_set=first.column("_order_first"))
    return ordered.filter(keep).drop_columns(["_order"])


def flat_inputs(log: pa.Table) -> pa.Table:
    """The `inputs` struct of inference-log rows as a table of plain columns."""
    column = log.column(INPUTS).combine_chunks()
    return pa.Table.from_arrays(column.flatten(), names=[f.name for f in column.type])
