"""Small durable documents under the lake root, changed with a compare-and-swap.

A `StateTable` is a Delta table holding one JSON document per revision; its revision is the table's
version. A write names the revision it read and commits only if the table is still there
(`max_commit_retries=0`: a concurrent commit fails it instead of being rebased on). So a
document lives wherever the lake does (a local folder, s3://, gs://), any node can read it back
after the node that wrote it is gone, and two writers that race cannot both win.

On object storage this rests on the same commit guarantee as every other Delta table of the
lake: give the lake a locking provider or conditional puts in `platform.storage_options`.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import pyarrow as pa
from deltalake import CommitProperties, write_deltalake
from deltalake.exceptions import CommitFailedError

from mlray.lake.tables import Lake

log = logging.getLogger(__name__)

SERVING_STATE = "serving_state"  # the control plane's document: the serving plan, keys, rollout (one writer)

STATE_SCHEMA = pa.schema([
    pa.field("revision", pa.int64(), nullable=False),
    pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("writer", pa.string()),
    pa.field("document", pa.string(), nullable=False),  # JSON
])


class StateConflict(RuntimeError):
    """Another writer changed the document after the revision this write was based on."""


class StateTable:
    """One JSON document with a history, kept as a Delta table; revision 0 means no document yet."""

    def __init__(self, lake: Lake, name: str):
        self.lake, self.name = lake, name

    def read(self) -> tuple[int, dict | None]:
        """(revision, document) as last committed."""
        if not self.lake.exists(self.name):
            return 0, None
        dt = self.lake.open(self.name)
        if dt.version() == 0:  # created, never written
            return 0, None
        rows = self.lake.changes_since(self.name, dt.version() - 1, columns=["document"])
        return dt.version(), json.loads(rows.column("document")[-1].as_py())

    def write(self, document: dict, expected: int, writer: str = "") -> int:
        """Commit `document` as the next revision if the latest is still `expected`; the new revision."""
        if not self.lake.exists(self.name):
            self.lake.create(self.name, STATE_SCHEMA)
        dt = self.lake.open(self.name)
        current = dt.version()
        if current != expected:
            raise StateConflict(f"{self.name}: expected revision {expected}, found {current}")
        row = pa.Table.from_pylist([{"revision": current + 1, "at": datetime.now(timezone.utc), "writer": writer,
                                     "document": json.dumps(document, default=str)}], schema=STATE_SCHEMA)
        try:
            write_deltalake(dt, row, mode="append", commit_properties=CommitProperties(max_commit_retries=0))
        except CommitFailedError:
            raise StateConflict(f"{self.name}: another writer committed after revision {expected}") from None
        return current + 1
