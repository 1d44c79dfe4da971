"""A Ray Data datasink that lands a dataset in an existing Delta table in one commit, exactly once.

Workers write Parquet files under the table and send back only their metadata (Delta
`AddAction`s); the driver commits every file in one Delta transaction that carries an
application transaction id. A batch whose id is already committed commits nothing, so a job
run again, or retried after a crash before its commit, lands its rows once. Files written by a
job that never commits are not part of any version: readers never see them.

Use it through `Lake.write_dataset`, which creates the table with its declared schema first.
"""

from __future__ import annotations

import logging
from typing import Iterable

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError

# Ray's DeltaDatasink lives in a private module (ray.data._internal). Ray is pinned to 2.60.* in
# pyproject.toml, so we subclass it: its worker-side Parquet writing (file names stable across task
# retries, object-store credentials) is kept as it is, and only the commit is replaced.
from ray.data._internal.datasource.delta_datasink import DeltaDatasink, DeltaWriteResult
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import WriteResult

from mlray.lake.tables import conform

log = logging.getLogger(__name__)


class TransactionalDeltaSink(DeltaDatasink):
    """Append to the Delta table at `uri` in one commit tagged with the application id `app_id`.

    Blocks are conformed to the table's `schema` on the workers (columns selected, in order, and
    cast), so the files match the table whatever the upstream batches looked like. After the
    write, `committed`, `version` and `rows` say what happened."""

    def __init__(self, uri: str, name: str, schema: pa.Schema, app_id: str, metadata: dict[str, str],
                 storage_options: dict[str, str] | None = None):
        super().__init__(uri, mode="append", storage_options=storage_options, schema_mode="error", name=name)
        self.table_name = name
        self.table_schema = schema
        self.app_id = app_id
        self.metadata = metadata
        self.committed = False
        self.version: int | None = None
        self.rows = 0

    def write(self, blocks: Iterable[Block], ctx) -> DeltaWriteResult:
        tables = (BlockAccessor.for_block(block).to_arrow() for block in blocks)
        # An empty block may have no columns at all; the base class skips it (it writes no file).
        conformed = (conform(table, self.table_schema, self.table_name) if table.num_rows else table
                     for table in tables)
        return super().write(conformed, ctx)

    def on_write_complete(self, write_result: WriteResult[DeltaWriteResult]) -> None:
        """Commit every file the workers wrote in one transaction, unless this app id is committed already."""
        actions = [action for result in write_result.write_returns if result is not None
                   for action in result.add_actions]
        properties = CommitProperties(custom_metadata=self.metadata,
                                      app_transactions=[Transaction(self.app_id, 1)])

        def commit() -> bool:
            # Checked inside the retried call: a commit that landed but reported an error is not repeated.
            if self._is_committed():
                return False
            dt = DeltaTable(self._path, storage_options=self._storage_options)
            try:
                dt.create_write_transaction(actions, mode="append", schema=self.table_schema,
                                            partition_by=self._partition_by or None, commit_properties=properties)
            except CommitFailedError:
                if self._is_committed():  # a concurrent writer committed this very batch first
                    return False
                raise
            return True

        self.committed = self._with_retry(commit, description=f"commit to Delta table at '{self._path}'",
                                          refresh=self._refresh_driver_filesystem)
        self.version = DeltaTable(self._path, storage_options=self._storage_options).version()
        self.rows = int(write_result.num_rows)
        log.info("%s %d file(s), %d rows, to Delta table %s (version %d)",
                 "committed" if self.committed else "found already committed: skipped", len(actions),
                 self.rows, self._path, self.version)

    def _is_committed(self) -> bool:
        dt = DeltaTable(self._path, storage_options=self._storage_options)
        return dt.transaction_version(self.app_id) is not None
