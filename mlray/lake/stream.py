"""Appends from a long-lived writer (an ingress replica's inference log or labels): the table is opened once and
brought up to date before each batch, and each batch carries a Delta application transaction (writer id, sequence),
so a batch whose commit landed but reported an error is skipped when it is sent again, never written twice.

A writer id is one application transaction for the life of the writer: the table's log keeps one entry per writer,
not one per batch."""

from __future__ import annotations

import logging

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from mlray.lake.io import conform
from mlray.lake.tables import APPEND_TRIES, Lake

log = logging.getLogger(__name__)


class StreamAppender:
    """Append typed batches to one existing table as `writer`, each batch once."""

    def __init__(self, lake: Lake, name: str, schema: pa.Schema, writer: str):
        self.lake, self.name, self.schema, self.writer = lake, name, schema, writer
        self._table: DeltaTable | None = None

    def _fresh(self) -> DeltaTable:
        """The table at its latest version: opened the first time, then updated from its log (cheaper)."""
        if self._table is None:
            self._table = self.lake.open(self.name)
        else:
            self._table.update_incremental()
        return self._table

    def landed(self, sequence: int) -> bool:
        """Whether batch `sequence` (or a later one) of this writer is committed."""
        committed = self._fresh().transaction_version(self.writer)
        return committed is not None and committed >= sequence

    def append(self, data: pa.Table, sequence: int) -> bool:
        """Commit `data` as batch `sequence` of this writer; False when it had landed already. Sequences only grow."""
        if data.schema != self.schema:
            data = conform(data, self.schema, self.name)
        for attempt in range(1, APPEND_TRIES + 1):
            if self.landed(sequence):
                return False
            properties = CommitProperties(custom_metadata={"mlray.writer": self.writer, "mlray.sequence": str(sequence)},
                                          app_transactions=[Transaction(self.writer, sequence)])
            try:
                write_deltalake(self._table, data, mode="append", commit_properties=properties)
                return True
            except CommitFailedError as exc:  # e.g. a retention delete removed files under this snapshot
                if attempt == APPEND_TRIES:
                    raise
                log.info("batch %d of %s to %s conflicted (%s); writing it again", sequence, self.writer, self.name,
                         str(exc).splitlines()[0])
        return False
