"""The inference log and the feedback labels: Delta tables the monitor and the rollout analysis read.

The ingress buffers one record per scored row and appends them in one commit every few seconds
(a batch id per flush, so a retried flush lands once). Feedback is appended at once, with the
request id as the batch id: the same feedback sent twice lands once.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import datetime, timezone

import pyarrow as pa

from mlray.lake import Lake

log = logging.getLogger(__name__)

INFERENCE_LOG_SCHEMA = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("row", pa.int32(), nullable=False),
    pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("model_version", pa.string(), nullable=False),
    pa.field("feature_version", pa.string()),
    pa.field("shadow", pa.bool_(), nullable=False),  # a mirrored call whose answer was not returned
    pa.field("sticky_key", pa.string()),
    pa.field("inputs", pa.string()),  # the raw row as JSON
    pa.field("prediction", pa.string()),
    pa.field("score", pa.float64()),  # binary score or top-class probability; regression: the prediction
    pa.field("latency_ms", pa.float64()),
    pa.field("error", pa.string()),
])

LABELS_SCHEMA = pa.schema([
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("row", pa.int32(), nullable=False),
    pa.field("label", pa.string(), nullable=False),  # as text: the monitor casts it to the label column's type
    pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
])


def now() -> datetime:
    return datetime.now(timezone.utc)


def score_of(prediction: dict) -> float | None:
    if "score" in prediction:
        return float(prediction["score"])
    probabilities = [v for k, v in prediction.items() if k.startswith("probability_")]
    if probabilities:
        return float(max(probabilities))
    value = prediction.get("prediction")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class InferenceLog:
    """A thread-safe buffer of inference records, flushed to a Delta table in one commit per flush."""

    def __init__(self, lake: Lake, table: str):
        self.lake, self.table = lake, table
        self.lock = threading.Lock()
        self.pending: list[dict] = []

    def record(self, request_id: str, version: str, rows: list[dict], predictions: list[dict] | None,
               latency_ms: float, shadow: bool = False, sticky_key: str | None = None,
               error: str | None = None) -> None:
        at = now()
        records = []
        for i, row in enumerate(rows):
            prediction = predictions[i] if predictions else {}
            records.append({
                "request_id": request_id, "row": i, "at": at, "model_version": version,
                "feature_version": prediction.get("feature_version"), "shadow": shadow,
                "sticky_key": sticky_key, "inputs": json.dumps(row, default=str),
                "prediction": None if not prediction else json.dumps(prediction.get("prediction"), default=str),
                "score": score_of(prediction) if prediction else None, "latency_ms": latency_ms, "error": error})
        with self.lock:
            self.pending.extend(records)

    def flush(self) -> int:
        """Append what is pending in one commit; returns the rows written. A failed write keeps them pending."""
        with self.lock:
            batch, self.pending = self.pending, []
        if not batch:
            return 0
        try:
            self.lake.append(self.table, pa.Table.from_pylist(batch, schema=INFERENCE_LOG_SCHEMA),
                             batch_id=f"inference:{uuid.uuid4().hex}", schema=INFERENCE_LOG_SCHEMA)
        except Exception:
            log.exception("could not write %d inference records to %s; keeping them for the next flush",
                          len(batch), self.table)
            with self.lock:
                self.pending = batch + self.pending
            return 0
        return len(batch)


def append_label(lake: Lake, table: str, request_id: str, row: int, label) -> bool:
    """Append one feedback label; the same (request id, row) lands once. True when it was new."""
    data = pa.Table.from_pylist([{"request_id": request_id, "row": row, "label": str(label), "at": now()}],
                                schema=LABELS_SCHEMA)
    return lake.append(table, data, batch_id=f"feedback:{request_id}:{row}", schema=LABELS_SCHEMA).committed
