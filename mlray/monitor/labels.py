"""Joining feedback labels with the predictions they label, for live quality."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from mlray.control.clock import Clock
from mlray.control.state import MonitorCheckpoint
from mlray.lake import Lake
from mlray.lake.inference import LABELS_SCHEMA, appended_since, dedupe_labels
from mlray.monitor.live import LiveQuality
from mlray.spec import ServeSpec

PENDING_LABELS = 10_000  # labels waiting for their logged prediction
PENDING_FOR = timedelta(hours=1)
LOGGED_ROW = "_logged_row"  # a join's own column: which logged row a label matched


class LabelJoin:
    """Takes the labels appended since the checkpoint's `labels_version` and hands each labelled prediction (every
    version that scored the row, shadows too) to live quality; a label that came before its prediction was flushed
    waits in the checkpoint (up to `PENDING_FOR`, at most `PENDING_LABELS`)."""

    def __init__(self, lake: Lake, serve: ServeSpec, clock: Clock, slices: list[str] = ()):
        self.lake, self.serve, self.clock, self.slices = lake, serve, clock, list(slices)  # kept per row: segments

    def take(self, checkpoint: MonitorCheckpoint, live: LiveQuality) -> int:
        """Join the new labels (and those waiting); returns the labels taken."""
        new = appended_since(self.lake, self.serve.labels_table, checkpoint.labels_version)
        parts = [pa.Table.from_pylist([dict(zip(LABELS_SCHEMA.names, (r, i, label, datetime.fromisoformat(at))))
                                       for r, i, label, at in checkpoint.pending_labels], schema=LABELS_SCHEMA)]
        if new is not None and new.num_rows:
            checkpoint.labels_version = int(pc.max(new.column("_commit_version")).as_py())
            parts.append(new.select(LABELS_SCHEMA.names).cast(LABELS_SCHEMA))
        labels = dedupe_labels(pa.concat_tables(parts))
        if labels.num_rows == 0:
            return 0
        matched = self._predictions_for(labels)
        for row in matched.to_pylist():
            live.add(row["model_version"], f"{row['request_id']}:{row['row']}", row["label"], row["prediction"],
                     row["score"], self._segments(row.get("inputs")), row.get("probabilities"))
        found = set(zip(matched.column("request_id").to_pylist(), matched.column("row").to_pylist()))
        cutoff = self.clock.now() - PENDING_FOR
        waiting = [[r["request_id"], r["row"], r["label"], r["at"].isoformat()] for r in labels.to_pylist()
                   if (r["request_id"], r["row"]) not in found and r["at"] >= cutoff]
        checkpoint.pending_labels = waiting[-PENDING_LABELS:]
        return len(found) + (new.num_rows if new is not None else 0)

    def _predictions_for(self, labels: pa.Table) -> pa.Table:
        table = self.serve.inference_log_table
        if not self.lake.exists(table):
            return pa.table({"request_id": pa.array([], pa.string()), "row": pa.array([], pa.int32())})
        dataset = self.lake.open(table).to_pyarrow_dataset()
        kept = [c for c in ("probabilities", *(["inputs"] if self.slices else [])) if c in dataset.schema.names]
        logged = dataset.to_table(filter=pc.field("request_id").isin(pc.unique(labels.column("request_id"))),
                                  columns=["request_id", "row", "model_version", "prediction", "score", *kept])
        if "probabilities" not in kept:
            return labels.join(logged, keys=["request_id", "row"], join_type="inner")
        # Arrow's join carries no list column: the joined rows take theirs by the logged row's index
        lists = logged.column("probabilities")
        logged = logged.drop_columns(["probabilities"]).append_column(LOGGED_ROW, pa.array(range(logged.num_rows), pa.int64()))
        joined = labels.join(logged, keys=["request_id", "row"], join_type="inner")
        return joined.drop_columns([LOGGED_ROW]).append_column("probabilities", lists.take(joined.column(LOGGED_ROW)))

    def _segments(self, inputs: dict | None) -> dict[str, str | None] | None:
        """The row's slice values as text (the segments' keys), or None when no slices are watched."""
        if not self.slices or inputs is None:
            return None
        return {c: None if inputs.get(c) is None else str(inputs[c]) for c in self.slices}
