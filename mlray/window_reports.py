"""The drift report of every window, one row each in a Delta table (`drift_reports`), written once per window.

The module sits beside `mlray.audit` (it imports spec, lake and control only): the monitor writes the reports, and
the rollout controller, which must not import the monitor, reads a window's estimated quality as evidence."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from mlray.control.state import WindowReport, read_row
from mlray.lake import Lake

TABLE = "drift_reports"
SCHEMA = pa.schema([
    pa.field("seq", pa.int64(), nullable=False),  # the window's number, from 0
    pa.field("epoch", pa.string(), nullable=False),  # the monitor's state this window belongs to
    pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),  # when it was checked
    pa.field("first_row_at", pa.timestamp("us", tz="UTC")),
    pa.field("last_row_at", pa.timestamp("us", tz="UTC")),
    pa.field("rows", pa.int64(), nullable=False),
    pa.field("champion", pa.string(), nullable=False),  # whose reference the window was compared with
    pa.field("start", pa.list_(pa.int64())),  # [log version, offset] of its first row
    pa.field("end", pa.list_(pa.int64())),  # ... and just after its last
    pa.field("columns", pa.list_(pa.string())),
    pa.field("p_values", pa.list_(pa.float64())),
    pa.field("distances", pa.list_(pa.float64())),
    pa.field("threshold", pa.float64()),
    pa.field("drifted", pa.list_(pa.string())),
    pa.field("score_p_value", pa.float64()),
    pa.field("score_distance", pa.float64()),
    pa.field("score_drift", pa.bool_()),
    pa.field("mmd_p_value", pa.float64()),
    pa.field("mmd_drift", pa.bool_()),
    pa.field("quality", pa.string()),  # JSON: model version → live metrics
    pa.field("quality_drop", pa.float64()),  # the champion's, on the retraining policy's metric
    pa.field("verdict", pa.string(), nullable=False),  # 'drift' or 'ok' (by the retraining policy's rule)
    pa.field("seconds", pa.float64()),  # how long the checks took
    # added later: at the end, so an older table gains them in place (`Lake.create(add_missing=True)`)
    pa.field("context", pa.string()),  # JSON: how the reference was matched to the window's periods
    pa.field("estimated", pa.string()),  # JSON: metric → {value, low, high}, estimated before labels
    pa.field("estimated_drop", pa.float64()),
    pa.field("priors", pa.string()),  # JSON: class → {value, low, high}
    pa.field("prior_shift", pa.list_(pa.string())),
    pa.field("versions", pa.string()),  # JSON: the other served versions' checks against their own references
    pa.field("prior_source", pa.string()),  # 'matched' or 'validation'
    pa.field("source_priors", pa.string()),  # JSON: class → {value, low, high} the shares were compared with
    pa.field("assumptions", pa.string()),  # JSON: CBPE against the labels, per metric (`AssumptionCheck`)
    pa.field("segments", pa.string()),  # JSON: the worst segments of train.slices
])
JSON_COLUMNS = ("quality", "context", "estimated", "priors", "versions", "source_priors", "assumptions", "segments")


_widened: set[str] = set()  # the tables (URIs) this process has given the columns added later


def batch_id(epoch: str, seq: int) -> str:
    return f"drift-window:{epoch}:{seq}"


def write_report(lake: Lake, report: WindowReport) -> bool:
    """Append one window's report; a window already reported is not written again. True when it was new."""
    row = report.model_dump() | {name: None if getattr(report, name) is None else json.dumps(getattr(report, name))
                                 for name in JSON_COLUMNS}
    data = pa.Table.from_pylist([row], schema=SCHEMA)
    if lake.uri(TABLE) not in _widened and lake.exists(TABLE):  # one an older mlray wrote gains the new columns, once
        lake.create(TABLE, SCHEMA, add_missing=True)
        _widened.add(lake.uri(TABLE))
    return lake.append(TABLE, data, batch_id=batch_id(report.epoch, report.seq), schema=SCHEMA).committed


def read_reports(lake: Lake, epoch: str | None = None, seq: int | None = None,
                 limit: int | None = None) -> list[WindowReport]:
    """Reports, newest window first (of one epoch, and one window, when given)."""
    if not lake.exists(TABLE):
        return []
    rows = lake.read(TABLE)
    if epoch is not None:
        rows = rows.filter(pc.equal(rows.column("epoch"), epoch))
    if seq is not None:
        rows = rows.filter(pc.equal(rows.column("seq"), seq))
    rows = rows.sort_by([("at", "descending"), ("seq", "descending")])
    if limit:
        rows = rows.slice(0, limit)
    return [as_report(row) for row in rows.to_pylist()]


def as_report(row: dict) -> WindowReport:
    """A row of the table as its report: the JSON columns decoded, a null taken as the field's default."""
    found = {k: v for k, v in row.items() if v is not None and k not in JSON_COLUMNS}
    return read_row(WindowReport, TABLE, f"{row['epoch']}:{row['seq']}",
                    found | {name: json.loads(row[name]) for name in JSON_COLUMNS if row.get(name)})
