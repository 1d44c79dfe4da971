"""The inference log and the feedback labels, buffered in each ingress replica and appended to Delta in one commit per
flush (their schemas and readers: `mlray.lake.inference`).

What an answered request leaves here reaches the lake once, or is counted:
- a record the table cannot hold (a value its type cannot take) goes, with its reason and raw JSON, to
  `<table>_rejects`; the rest of the flush lands;
- each flush is one batch with a sequence number, committed with a Delta application transaction (writer id,
  sequence): a batch whose commit landed but reported an error is not written again when it is retried;
- a batch that cannot be written (the lake unreachable) is kept and retried, oldest first, up to
  `serve.log_buffer_rows` rows; beyond that the oldest rows are dropped and counted, never silently.

A replica refuses a label for a (request id, row) it holds or flushed recently; two replicas (or a restarted one) may
still both take one, so readers keep the first (`dedupe_labels`).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from mlray.lake import Lake
from mlray.lake.inference import INPUTS, LABELS_SCHEMA, REJECTS_SCHEMA, inference_log_schema, rejects_name
from mlray.lake.stream import StreamAppender
from mlray.registry.scores import probabilities_of, score_of
from mlray.serve.schema import INT64_MAX, INT64_MIN, request_columns
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)

RECENT_LABELS = 100_000  # (request id, row) keys a replica remembers, to answer a repeated label with stored=False
DEFAULT_BUFFER_ROWS = 200_000
REASON_CHARS = 500


def now() -> datetime:
    return datetime.now(timezone.utc)


def log_schema(spec: ProjectSpec) -> pa.Schema:
    """The project's inference log: its request columns, typed as the lake has them, in the `inputs` struct."""
    return inference_log_schema(spec.train_table, request_columns(spec)[0])


def create_tables(spec: ProjectSpec, lake: Lake) -> None:
    """Create the inference log and the labels table (a log from before a column was added gains it); one with another
    schema is a UserError naming the table and the difference."""
    lake.create(spec.serve.inference_log_table, log_schema(spec), description=f"inference log of {spec.name}",
                add_missing=True)
    lake.create(spec.serve.labels_table, LABELS_SCHEMA, description=f"feedback labels of {spec.name}")


@dataclass(frozen=True)
class _Batch:
    """Typed rows of one flush, not yet committed, with their sequence number and the records refused."""
    sequence: int
    data: pa.Table
    rejects: pa.Table | None

    @property
    def rows(self) -> int:
        return self.data.num_rows


@dataclass
class BufferStats:
    pending: int  # rows buffered or in batches not yet committed
    dropped: int  # rows dropped since the last call: the buffer was full
    rejected: int  # records refused since the last call: the table cannot hold them


class BufferedTable:
    """A bounded, thread-safe buffer of records flushed to one table in one commit per flush, each record exactly once
    or counted (dropped, rejected). Subclasses say how records become rows."""

    def __init__(self, lake: Lake, table: str, schema: pa.Schema, writer: str | None = None,
                 max_rows: int = DEFAULT_BUFFER_ROWS):
        writer = writer or f"mlray-writer:{uuid.uuid4().hex}"
        self.lake, self.table, self.schema, self.max_rows = lake, table, schema, max_rows
        self.appender = StreamAppender(lake, table, schema, writer)
        self.rejects = StreamAppender(lake, rejects_name(table), REJECTS_SCHEMA, writer)
        self.lock = threading.Lock()
        self.flushing = threading.Lock()  # one flush at a time (the periodic one, and the replica's last at its stop)
        self.pending: deque = deque()
        self.pending_rows = 0
        self.unsent: deque[_Batch] = deque()  # touched under `flushing` only
        self.sequence = 0
        self.dropped = self.rejected = 0  # since the last `stats()`

    # ------------------------------------------------------------------ what subclasses say

    def rows_of(self, items: list) -> pa.Table:
        raise NotImplementedError

    def split(self, item) -> list:
        """`item` as its smallest parts (one per row), for finding the one that cannot be typed."""
        return [item]

    def refused(self, item, reason: str) -> dict:
        """A rejects-table record for `item`."""
        raise NotImplementedError

    @staticmethod
    def size(item) -> int:
        return 1

    # ------------------------------------------------------------------ buffering

    def _keep(self, item) -> None:
        with self.lock:
            self._keep_locked(item)

    def _keep_locked(self, item) -> None:
        """`_keep`, the caller holding `lock`."""
        self.pending.append(item)
        self.pending_rows += self.size(item)
        while self.pending_rows > self.max_rows and len(self.pending) > 1:  # the oldest go first
            oldest = self.size(self.pending.popleft())
            self.pending_rows -= oldest
            self.dropped += oldest

    def stats(self) -> BufferStats:
        with self.lock:
            unsent = list(self.unsent)  # a copy made at once (under the GIL): a flush may be popping from it
            stats = BufferStats(self.pending_rows + sum(b.rows for b in unsent), self.dropped, self.rejected)
            self.dropped = self.rejected = 0
        return stats

    # ------------------------------------------------------------------ flushing

    def flush(self) -> int:
        """Commit what is pending as one batch, after any batch an earlier flush could not write; returns the rows
        committed. A batch that cannot be written stays for the next flush."""
        with self.flushing:
            return self._flush()

    def _flush(self) -> int:
        with self.lock:
            items, self.pending, self.pending_rows = list(self.pending), deque(), 0
        if items:
            self.sequence += 1
            self.unsent.append(self._batch(self.sequence, items))
        self._trim()
        written = 0
        while self.unsent:
            batch = self.unsent[0]
            try:
                written += self._write(batch)
            except Exception:  # noqa: BLE001 - the lake may be away for a while: keep the batch, retry at the next flush
                log.exception("could not write %d rows to %s; keeping them for the next flush", batch.rows, self.table)
                break
            self.unsent.popleft()
        return written

    def _batch(self, sequence: int, items: list) -> _Batch:
        """The items typed in one pass; if that fails, part by part, the parts that cannot be typed refused."""
        try:
            return _Batch(sequence, self.rows_of(items), None)
        except Exception:  # noqa: BLE001 - find the culprits below; everyone else's rows land
            pass
        good, bad = [], []
        for part in (p for item in items for p in self.split(item)):
            try:
                good.append(self.rows_of([part]))
            except Exception as exc:  # noqa: BLE001 - any failure to type a record is its own, named in the rejects
                bad.append(self.refused(part, f"{type(exc).__name__}: {exc}"[:REASON_CHARS]))
        with self.lock:
            self.rejected += len(bad)
        log.warning("%d record(s) for %s cannot be typed; they go to %s", len(bad), self.table, rejects_name(self.table))
        data = pa.concat_tables(good) if good else self.schema.empty_table()
        return _Batch(sequence, data, pa.Table.from_pylist(bad, schema=REJECTS_SCHEMA))

    def _write(self, batch: _Batch) -> int:
        if batch.rejects is not None and batch.rejects.num_rows:
            self.lake.create(rejects_name(self.table), REJECTS_SCHEMA, description=f"records {self.table} refused")
            self.rejects.append(batch.rejects, batch.sequence)
        if batch.rows == 0:
            return 0
        return batch.rows if self.appender.append(batch.data, batch.sequence) else 0

    def _trim(self) -> None:
        """Drop the oldest unsent rows beyond `max_rows`, and say so once."""
        over, dropped = sum(b.rows for b in self.unsent) - self.max_rows, 0
        while over > 0 and self.unsent:
            oldest = self.unsent[0]
            cut = min(over, oldest.rows)
            if cut == oldest.rows:
                self.unsent.popleft()
            else:
                self.unsent[0] = replace(oldest, data=oldest.data.slice(cut))
            over, dropped = over - cut, dropped + cut
        with self.lock:
            self.dropped += dropped
        if dropped:
            log.warning("dropped the %d oldest rows for %s: the lake has been unreachable and the buffer holds %d rows "
                        "(serve.log_buffer_rows)", dropped, self.table, self.max_rows)


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
    key_fingerprint: str | None = None
    pinned: bool = False
    first_row: int = 0  # the request row of `rows[0]` (a call split row by row keeps its rows' numbers)


_ENCODE = json.JSONEncoder(default=str).encode  # json.dumps(value, default=str) without building an encoder per call


def _json(value: Any) -> str:
    """`json.dumps(value, default=str)`; the usual predictions (a bool, none) without the encoder."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return _ENCODE(value)


def _structs(rows: list, kind: pa.StructType) -> pa.Array:
    """`pa.array(rows, kind)`, built field by field when every row is a dict (several times faster, the same array);
    if that fails, the whole-row conversion raises its own error, as it always did."""
    if all(type(row) is dict for row in rows):
        fields = list(kind)
        try:
            return pa.StructArray.from_arrays([pa.array([row.get(name) for row in rows], field.type)
                                               for name, field in zip(kind.names, fields)], fields=fields)
        except Exception:  # noqa: BLE001 - the conversion below names the culprit the way the rejects expect
            pass
    return pa.array(rows, kind)


class InferenceLog(BufferedTable):
    """The scoring calls of one replica, flushed to the inference log."""

    def record(self, request_id: str, version: str, rows: list[dict], predictions: list[dict] | None,
               latency_ms: float, shadow: bool = False, sticky_key: str | None = None, error: str | None = None,
               key_fingerprint: str | None = None, pinned: bool = False) -> None:
        """Keep one call: its validated rows (typed at the flush), `predictions` one per row (None: failed)."""
        self._keep(_Call(request_id, now(), version, rows, predictions, latency_ms, shadow, sticky_key, error,
                         key_fingerprint, pinned))

    @staticmethod
    def size(call: _Call) -> int:
        return len(call.rows)

    def split(self, call: _Call) -> list[_Call]:
        answers = call.predictions or [None] * len(call.rows)
        return [replace(call, rows=[row], predictions=None if call.predictions is None else [answer],
                        first_row=call.first_row + i) for i, (row, answer) in enumerate(zip(call.rows, answers))]

    def refused(self, call: _Call, reason: str) -> dict:
        raw = {"model_version": call.version, "inputs": call.rows, "predictions": call.predictions, "error": call.error}
        return {"request_id": call.request_id, "row": call.first_row, "reason": reason, "raw": _json(raw), "at": call.at}

    def rows_of(self, calls: list[_Call]) -> pa.Table:
        """The log rows of `calls`: one per input row, the call's fields repeated on each."""
        counts = [len(call.rows) for call in calls]
        of_call = pa.array(np.repeat(np.arange(len(calls)), counts))

        def repeated(values: list, kind: pa.DataType) -> pa.Array:
            return pa.array(values, kind).take(of_call)

        answers = [(call.predictions[i] if call.predictions else {}) for call in calls for i in range(len(call.rows))]
        columns = {
            "request_id": repeated([c.request_id for c in calls], pa.string()),
            "row": pa.array(np.concatenate([np.arange(c.first_row, c.first_row + len(c.rows)) for c in calls]),
                            pa.int32()),
            "at": repeated([c.at for c in calls], self.schema.field("at").type),
            "model_version": repeated([c.version for c in calls], pa.string()),
            "feature_version": pa.array([a.get("feature_version") for a in answers], pa.string()),
            "shadow": repeated([c.shadow for c in calls], pa.bool_()),
            "sticky_key": repeated([c.sticky_key for c in calls], pa.string()),
            INPUTS: _structs([row for call in calls for row in call.rows], self.schema.field(INPUTS).type),
            "prediction": pa.array([_json(a.get("prediction")) if a else None for a in answers], pa.string()),
            "score": pa.array([score_of(a) if a else None for a in answers], pa.float64()),
            "latency_ms": repeated([c.latency_ms for c in calls], pa.float64()),
            "error": repeated([c.error for c in calls], pa.string()),
            "key_fingerprint": repeated([c.key_fingerprint for c in calls], pa.string()),
            "pinned": repeated([c.pinned for c in calls], pa.bool_()),
            "probabilities": pa.array([probabilities_of(a) if a else None for a in answers], pa.list_(pa.float64())),
        }
        return pa.Table.from_pydict(columns, schema=self.schema)


class LabelLog(BufferedTable):
    """The feedback labels of one replica, flushed to the labels table. A (request id, row) it holds or flushed
    recently is refused, so the same feedback sent twice to a replica lands once."""

    def __init__(self, lake: Lake, table: str, writer: str | None = None, max_rows: int = DEFAULT_BUFFER_ROWS,
                 remember: int = RECENT_LABELS):
        super().__init__(lake, table, LABELS_SCHEMA, writer, max_rows)
        self.remember = remember
        self.seen: OrderedDict[tuple[str, int], None] = OrderedDict()  # buffered or recently flushed, oldest first

    def add(self, request_id: str, row: int, label: str) -> bool:
        """Buffer one label, as text; False when this replica already has one for (request id, row)."""
        key = (request_id, row)
        with self.lock:  # one lock for the check and the buffer: a label costs microseconds, and there are many
            if key in self.seen:
                return False
            self.seen[key] = None
            if len(self.seen) > self.remember:
                self.seen.popitem(last=False)
            self._keep_locked((request_id, row, str(label), now()))
        return True

    def rows_of(self, labels: list[tuple]) -> pa.Table:
        """The first label of each key (a key forgotten while still pending may be here twice)."""
        first: dict[tuple[str, int], tuple] = {}
        for label in labels:
            first.setdefault(label[:2], label)
        kept = list(first.values())
        if kept:
            try:  # column by column: several times faster than from_pylist, the same table
                return pa.Table.from_arrays([pa.array(column, field.type) for column, field in
                                             zip(zip(*kept), LABELS_SCHEMA)], schema=LABELS_SCHEMA)
            except Exception:  # noqa: BLE001 - from_pylist below raises the error the rejects name, as it always did
                pass
        return pa.Table.from_pylist([dict(zip(LABELS_SCHEMA.names, label)) for label in kept], schema=LABELS_SCHEMA)

    def refused(self, label: tuple, reason: str) -> dict:
        request_id, row, text, at = label
        in_range = isinstance(row, int) and INT64_MIN <= row <= INT64_MAX
        raw = {"request_id": request_id, "row": row if in_range else str(row), "label": text}
        return {"request_id": str(request_id), "row": row if in_range else None, "reason": reason, "raw": _json(raw),
                "at": at}
