"""A Ray Data datasink that lands a dataset in an existing Delta table in one commit, exactly once.

Workers write Parquet files under the table and send back only their metadata (Delta
`AddAction`s); the driver commits every file in one Delta transaction that carries an
application transaction id. A batch whose id is already committed commits nothing, so a job
run again, or retried after a crash before its commit, lands its rows once. Files written by a
job that never commits are not part of any version: readers never see them.

Built on Ray Data's public `Datasink` API, and deltalake's `create_write_transaction` for the commit.
Use it through `Lake.write_dataset`, which creates the table with its declared schema first.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink, WriteResult

from mlray.lake.io import conform, filesystem_of

log = logging.getLogger(__name__)


class TransactionalDeltaSink(Datasink[list[AddAction]]):
    """Append to the Delta table at `uri` in one commit tagged with the application id `app_id`.

    Blocks are conformed to the table's `schema` on the workers (columns selected, in order, and
    cast), so the files match the table whatever the upstream batches looked like. After the
    write, `committed`, `version` and `rows` say what happened."""

    def __init__(self, uri: str, name: str, schema: pa.Schema, app_id: str, metadata: dict[str, str],
                 storage_options: dict[str, str] | None = None):
        self.uri, self.table_name, self.table_schema = uri, name, schema
        self.app_id, self.metadata, self.storage_options = app_id, metadata, storage_options
        self.write_id = uuid.uuid4().hex  # one per write: a retried task rewrites the same file name
        self.committed = False
        self.version: int | None = None
        self.rows = 0

    def get_name(self) -> str:
        return f"Delta({self.table_name})"

    def write(self, blocks: Iterable[Block], ctx) -> list[AddAction]:
        """On a worker: this task's blocks as one Parquet file under the table; its Delta add action."""
        tables = [conform(table, self.table_schema, self.table_name)
                  for table in (BlockAccessor.for_block(block).to_arrow() for block in blocks) if table.num_rows]
        if not tables:
            return []
        data = pa.concat_tables(tables)
        fs, root = filesystem_of(self.uri, self.storage_options)
        name = f"part-{self.write_id}-{ctx.task_idx:05d}.parquet"
        pq.write_table(data, f"{root.rstrip('/')}/{name}", filesystem=fs)
        size = fs.get_file_info(f"{root.rstrip('/')}/{name}").size
        return [AddAction(name, size, {}, int(time.time() * 1000), True, json.dumps(file_stats(data)))]

    def on_write_complete(self, write_result: WriteResult[list[AddAction]]) -> None:
        """Commit every file the workers wrote in one transaction, unless this app id is committed already."""
        actions = [action for result in write_result.write_returns for action in result or []]
        self.committed = self._commit(actions)
        self.version = DeltaTable(self.uri, storage_options=self.storage_options).version()
        self.rows = int(write_result.num_rows)
        log.info("%s %d file(s), %d rows, to Delta table %s (version %d)",
                 "committed" if self.committed else "found already committed: skipped", len(actions),
                 self.rows, self.uri, self.version)

    def _commit(self, actions: list[AddAction]) -> bool:
        if self._is_committed():
            return False
        dt = DeltaTable(self.uri, storage_options=self.storage_options)
        properties = CommitProperties(custom_metadata=self.metadata, app_transactions=[Transaction(self.app_id, 1)])
        try:
            dt.create_write_transaction(actions, mode="append", schema=self.table_schema, commit_properties=properties)
        except CommitFailedError:
            if self._is_committed():  # a concurrent writer committed this very batch first
                return False
            raise
        return True

    def _is_committed(self) -> bool:
        dt = DeltaTable(self.uri, storage_options=self.storage_options)
        return dt.transaction_version(self.app_id) is not None


def file_stats(data: pa.Table) -> dict:
    """Delta file statistics: row count, and per column null count and (for ordered types) min and max."""
    nulls, low, high = {}, {}, {}
    for field in data.schema:
        column = data.column(field.name)
        nulls[field.name] = column.null_count
        if (pa.types.is_integer(field.type) or pa.types.is_floating(field.type) or pa.types.is_temporal(field.type)
                or pa.types.is_string(field.type)) and column.null_count < len(column):
            bounds = pc.min_max(column)
            low[field.name], high[field.name] = (_json_value(bounds["min"]), _json_value(bounds["max"]))
    return {"numRecords": data.num_rows, "nullCount": nulls, "minValues": low, "maxValues": high}


def _json_value(scalar: pa.Scalar):
    value = scalar.as_py()
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text.replace("+00:00", "Z") if "+00:00" in text else text
    if isinstance(value, float) and value != value:  # NaN has no JSON form
        return None
    return value
