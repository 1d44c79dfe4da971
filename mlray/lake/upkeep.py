"""Upkeep of an append-heavy table (the inference log, the labels): compact small files, expire old rows, vacuum.

No step takes a lock, so writers go on appending meanwhile. A compaction rewrites files without changing data: it adds
nothing to the change feed, so `appended_since` never takes its rewrites for new rows. The retention delete makes
delta-rs fail appends in flight with a conflict, which `Lake.append` writes again. Vacuum removes only files that
left the table longer than the retention ago (at least an hour): readers of a younger snapshot keep theirs.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta, timezone
from typing import Callable, TypeVar

from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from mlray.errors import UserError
from mlray.lake.tables import Lake

log = logging.getLogger(__name__)

STEP_TRIES = 5
T = TypeVar("T")


def compact_and_expire(lake: Lake, name: str, retention: timedelta, now: datetime | None = None,
                       time_column: str = "at") -> dict:
    """Compact `name`'s small files, delete its rows whose `time_column` is older than `retention`, vacuum the files
    that left the table more than `retention` ago. Returns what each step did."""
    if retention <= timedelta(0):
        raise UserError(f"the retention of table '{name}' must be positive (got {retention})")
    cutoff = (now or datetime.now(timezone.utc)).astimezone(timezone.utc) - retention
    dt = lake.open(name)
    compacted = _retrying(dt, name, "compaction", lambda: dt.optimize.compact())
    deleted = _retrying(dt, name, "retention delete", lambda: dt.delete(_older_than(time_column, cutoff)))
    vacuumed = dt.vacuum(retention_hours=_vacuum_hours(retention), enforce_retention_duration=False, dry_run=False)
    counts = {"files_removed": compacted["numFilesRemoved"], "files_added": compacted["numFilesAdded"],
              "rows_deleted": deleted["num_deleted_rows"], "files_vacuumed": len(vacuumed)}
    log.info("upkeep of %s (rows before %s deleted): %s", name, cutoff.isoformat(), counts)
    return counts


def _older_than(column: str, cutoff: datetime) -> str:
    """A delta-rs predicate: `column` before `cutoff` (UTC)."""
    return f"\"{column}\" < '{cutoff.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'"


def _vacuum_hours(retention: timedelta) -> int:
    """Vacuum's retention in whole hours, at least one, so the files of an append still in flight are never taken."""
    return max(1, math.ceil(retention / timedelta(hours=1)))


def _retrying(dt: DeltaTable, name: str, step: str, run: Callable[[], T]) -> T:
    """`run()` on the latest snapshot, again when a concurrent commit conflicts with it."""
    attempt = 1
    while True:
        dt.update_incremental()
        try:
            return run()
        except CommitFailedError as exc:
            if attempt == STEP_TRIES:
                raise
            attempt += 1
            log.info("%s of %s conflicted with a concurrent commit (%s); running it again", step, name,
                     str(exc).splitlines()[0])
