"""Cutting the inference log into windows, exactly once.

The served rows (not shadow copies) are read from the log's change feed in one fixed order: commit version, then
request id, then row. A position in that stream is a `Cursor` (a commit version and how many of its rows come
before), so a window is the rows between two cursors and a restarted monitor reads the same rows again. A window
closes after `window_rows` rows, or once `window` has passed since its first row (and it holds at least
`min_window_rows`); rows that arrive later than that belong to the next window.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlray.control.clock import Clock
from mlray.lake import Lake
from mlray.lake.inference import appended_since
from mlray.spec import MonitorSpec, ServeSpec

# `probabilities` (multiclass) is left out of a log from before it was kept
WINDOW_LOG_COLUMNS = ["request_id", "row", "at", "model_version", "shadow", "inputs", "prediction", "score", "error",
                      "probabilities"]
ORDER = [("_commit_version", "ascending"), ("request_id", "ascending"), ("row", "ascending")]


@dataclass(frozen=True)
class Cursor:
    version: int  # a commit of the inference log
    offset: int  # rows of that commit (in the fixed order) already consumed

    def to_list(self) -> list[int]:
        return [self.version, self.offset]


def read_from(lake: Lake, table: str, cursor: Cursor) -> pa.Table | None:
    """The served rows from `cursor` on, in the fixed order, with `_commit_version` and `_offset` (the row's place
    in its commit); None when the log does not exist yet."""
    rows = appended_since(lake, table, cursor.version - 1, WINDOW_LOG_COLUMNS)
    if rows is None:
        return None
    rows = rows.filter(pc.invert(rows.column("shadow"))).sort_by(ORDER)
    versions = rows.column("_commit_version").to_numpy()
    starts = np.searchsorted(versions, versions, side="left")  # where each row's commit begins
    rows = rows.append_column("_offset", pa.array(np.arange(len(versions)) - starts, pa.int64()))
    return rows.slice(min(cursor.offset, _rows_of(versions, cursor.version)))


def _rows_of(versions: np.ndarray, version: int) -> int:
    return int(np.count_nonzero(versions == version))


def cursor_after(rows: pa.Table, count: int, start: Cursor) -> Cursor:
    """The position just after the first `count` rows of `rows` (as `read_from` returned them)."""
    if count == 0:
        return start
    return Cursor(int(rows.column("_commit_version")[count - 1].as_py()), int(rows.column("_offset")[count - 1].as_py()) + 1)


def window_end(times: list[datetime], now: datetime, spec: MonitorSpec, grace: timedelta) -> int | None:
    """How many of the pending rows (their `at`, in stream order) close the current window, or None to wait.

    On rows: `window_rows`. On time: the rows before the first that came `window` after the window's first row
    (or all, once `window` plus `grace` for late flushes has passed by the clock), but never fewer than
    `min_window_rows`."""
    if not times:
        return None
    full = len(times) >= spec.window_rows
    deadline = times[0] + spec.window
    late = next((i for i, at in enumerate(times[: spec.window_rows]) if at >= deadline), None)
    if late is None and now >= deadline + grace:
        late = len(times)
    if late is not None:
        end = min(max(late, spec.min_window_rows), spec.window_rows)
        if end <= len(times):
            return end
    return spec.window_rows if full else None


class WindowStream:
    """The complete windows of the served rows from a cursor on, in stream order. A window waits for late flushes
    (`grace`: a poll interval and the log's flush period) before it closes on time."""

    def __init__(self, lake: Lake, serve: ServeSpec, monitor_rules: MonitorSpec, clock: Clock):
        self.lake, self.table, self.monitor_rules, self.clock = lake, serve.inference_log_table, monitor_rules, clock
        self.grace = monitor_rules.poll_interval + timedelta(seconds=serve.log_flush_s + 1)

    def complete(self, cursor: Cursor) -> Iterator[tuple[pa.Table, Cursor, Cursor]]:
        """(rows, start, end) of each complete window from `cursor` on; the next one starts at the previous `end`
        (stop iterating to start elsewhere)."""
        rows = read_from(self.lake, self.table, cursor)
        while rows is not None and rows.num_rows:
            end = window_end(rows.column("at").to_pylist(), self.clock.now(), self.monitor_rules, self.grace)
            if end is None:
                return
            after = cursor_after(rows, end, cursor)
            yield rows.slice(0, end), cursor, after
            cursor, rows = after, rows.slice(end)
