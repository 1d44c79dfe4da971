"""The inference log and the feedback labels, buffered in each ingress replica and appended to Delta in one commit per
flush (their schemas and readers: `mlray.lake.inference`).

A failed flush keeps its rows for the next one. A replica refuses a label for a (request id, row) it holds or flushed
recently; two replicas (or a restarted one) may still both take one, so readers keep the first (`dedupe_labels`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from mlray.lake import Lake
from mlray.lake.inference import INPUTS, LABELS_SCHEMA, inference_log_schema
from mlray.registry.scores import score_of
from mlray.serve.schema import request_columns
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)

RECENT_LABELS = 100_000  # (request id, row) keys a replica remembers, to answer a repeated label with stored=False


def now() -> datetime:
    return datetime.now(timezone.utc)


def log_schema(spec: ProjectSpec) -> pa.Schema:
    """The project's inference log: its request columns, typed as the lake has them, in the `inputs` struct."""
    return inference_log_schema(spec.train_table, request_columns(spec)[0])


def create_tables(spec: ProjectSpec, lake: Lake) -> None:
    """Create the inference log and the labels table; one with another schema (e.g. from an older mlray) is a
    UserError naming the table and the difference."""
    lake.create(spec.serve.inference_log_table, log_schema(spec), description=f"inference log of {spec.name}")
    lake.create(spec.serve.labels_table, LABELS_SCHEMA, description=f"feedback labels of {spec.name}")


@dataclass(frozen=True)
class _Call:
    """One scoring call as the ingress saw it: its validated rows and what the model answered."""
    request_id: str
    at: datetime
    version: str
    rows: list[dict]
    predictions: list[dict] | None
    latency_ms: float
    shadow: bool
    sticky_key: str | None
    error: str | None


class InferenceLog:
    """A thread-safe buffer of scoring calls, flushed to the inference log in one commit per flush."""

    def __init__(self, lake: Lake, table: str, schema: pa.Schema):
        self.lake, self.table, self.schema = lake, table, schema
        self.lock = threading.Lock()
        self.pending: list[_Call] = []

    def record(self, request_id: str, version: str, rows: list[dict], predictions: list[dict] | None,
               latency_ms: float, shadow: bool = False, sticky_key: str | None = None,
               error: str | None = None) -> None:
        """Keep one call: its validated rows (typed at the flush), `predictions` one per row (None: failed)."""
        call = _Call(request_id, now(), version, rows, predictions, latency_ms, shadow, sticky_key, error)
        with self.lock:
            self.pending.append(call)

    def flush(self) -> int:
        """Append what is pending in one commit; returns the rows written. A failed write keeps them pending."""
        with self.lock:
            calls, self.pending = self.pending, []
        if not calls:
            return 0
        try:
            data = self.rows_of(calls)
        except Exception:  # noqa: BLE001 - rows that cannot be built never will be: drop them, keep serving
            log.exception("could not build the inference log rows of %d calls; dropping them", len(calls))
            return 0
        try:
            self.lake.append(self.table, data, schema=self.schema)
        except Exception:  # noqa: BLE001 - the lake may be down for a while: keep the rows for the next flush
            log.exception("could not write %d inference records to %s; keeping them for the next flush",
                          data.num_rows, self.table)
            with self.lock:
                self.pending = calls + self.pending
            return 0
        return data.num_rows

    def rows_of(self, calls: list[_Call]) -> pa.Table:
        """The log rows of `calls`: one per input row, the call's fields repeated on each."""
        counts = [len(call.rows) for call in calls]
        of_call = pa.array(np.repeat(np.arange(len(calls)), counts))

        def repeated(values: list, kind: pa.DataType) -> pa.Array:
            return pa.array(values, kind).take(of_call)

        answers = [(call.predictions[i] if call.predictions else {}) for call in calls for i in range(len(call.rows))]
        columns = {
            "request_id": repeated([c.request_id for c in calls], pa.string()),
            "row": pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in counts]), pa.int32()),
            "at": repeated([c.at for c in calls], self.schema.field("at").type),
            "model_version": repeated([c.version for c in calls], pa.string()),
            "feature_version": pa.array([a.get("feature_version") for a in answers], pa.string()),
            "shadow": repeated([c.shadow for c in calls], pa.bool_()),
            "sticky_key": repeated([c.sticky_key for c in calls], pa.string()),
            INPUTS: self._inputs(calls),
            "prediction": pa.array([json.dumps(a.get("prediction"), default=str) if a else None for a in answers],
                                   pa.string()),
            "score": pa.array([score_of(a) if a else None for a in answers], pa.float64()),
            "latency_ms": repeated([c.latency_ms for c in calls], pa.float64()),
            "error": repeated([c.error for c in calls], pa.string()),
        }
        return pa.Table.from_pydict(columns, schema=self.schema)

    def _inputs(self, calls: list[_Call]) -> pa.StructArray:
        """The calls' rows as the `inputs` struct, typed in one pass."""
        return pa.array([row for call in calls for row in call.rows], self.schema.field(INPUTS).type)


class LabelLog:
    """A thread-safe buffer of feedback labels, flushed to the labels table in one commit per flush. A (request id,
    row) it holds or flushed recently is refused, so the same feedback sent twice to a replica lands once."""

    def __init__(self, lake: Lake, table: str, remember: int = RECENT_LABELS):
        self.lake, self.table, self.remember = lake, table, remember
        self.lock = threading.Lock()
        self.pending: list[tuple[str, int, str, datetime]] = []
        self.seen: OrderedDict[tuple[str, int], None] = OrderedDict()  # buffered or recently flushed, oldest first

    def add(self, request_id: str, row: int, label) -> bool:
        """Buffer one label (kept as text); False when this replica already has one for (request id, row)."""
        key = (request_id, row)
        with self.lock:
            if key in self.seen:
                return False
            self.seen[key] = None
            if len(self.seen) > self.remember:
                self.seen.popitem(last=False)
            self.pending.append((request_id, row, str(label), now()))
        return True

    def flush(self) -> int:
        """Append what is pending in one commit, the first label of each key; returns the rows written. A failed
        write keeps them pending."""
        with self.lock:
            batch, self.pending = self.pending, []
        if not batch:
            return 0
        first: dict[tuple[str, int], tuple] = {}
        for label in batch:  # a key forgotten while still pending (beyond `remember` labels) may be here twice
            first.setdefault(label[:2], label)
        data = pa.Table.from_pylist([dict(zip(LABELS_SCHEMA.names, label)) for label in first.values()],
                                    schema=LABELS_SCHEMA)
        try:
            self.lake.append(self.table, data, schema=LABELS_SCHEMA)
        except Exception:  # noqa: BLE001 - the lake may be down for a while: keep the labels for the next flush
            log.exception("could not write %d labels to %s; keeping them for the next flush", data.num_rows, self.table)
            with self.lock:
                self.pending = batch + self.pending
            return 0
        return data.num_rows
