"""Delta Lake tables under one root: create, idempotent append, time travel, changes, history.

All Delta access in mlray goes through `Lake`. Local paths and object-store URIs (s3://,
gs://, abfss://) work alike; `storage_options` pass straight to deltalake.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.schema import Field

from mlray.errors import UserError
from mlray.lake.io import conform, filesystem_of, is_remote, schema_difference
from mlray.spec import NAME_PATTERN, PlatformSpec

log = logging.getLogger(__name__)

BLOCK_BYTES = 256 * 1024 * 1024
CDF_CONFIG = {"delta.enableChangeDataFeed": "true"}
BATCH_APP_PREFIX = "mlray-batch:"
APPEND_TRIES = 5


@dataclass(frozen=True)
class AppendResult:
    table: str
    version: int  # the table version after the append (unchanged when skipped)
    committed: bool  # False when this batch id had been committed before
    rows: int


@dataclass(frozen=True)
class TableInfo:
    name: str
    uri: str
    version: int
    rows: int
    columns: int
    last_commit: datetime | None


def arrow_schema_of(dt: DeltaTable) -> pa.Schema:
    return pa.schema(dt.schema().to_arrow())


def row_count(dt: DeltaTable) -> int:
    """Rows in the loaded version, from the file statistics in the Delta log (no data read)."""
    adds = dt.get_add_actions(flatten=True)
    return sum(r or 0 for r in pa.table(adds).column("num_records").to_pylist()) if adds.num_rows else 0


# What makes a Delta commit on S3 atomic (two writers cannot both write version N): a lock table, or the store's
# conditional puts. AWS_S3_ALLOW_UNSAFE_RENAME opts out, for one writer alone (a local S3 emulator in a test).
S3_COMMIT_SAFETY = ("AWS_S3_LOCKING_PROVIDER", "CONDITIONAL_PUT", "AWS_CONDITIONAL_PUT", "AWS_S3_ALLOW_UNSAFE_RENAME")


def check_atomic_commits(root: str, storage_options: dict[str, str], environ: dict[str, str] | None = None) -> None:
    """Refuse an S3 lake whose commits nothing makes atomic: the control plane's compare-and-swap and every concurrent
    append rest on them. deltalake reads these settings from the storage options or the environment."""
    if not root.startswith(("s3://", "s3a://")):
        return
    environ = os.environ if environ is None else environ
    given = {k.upper() for k in storage_options} | {k for k in environ if k in S3_COMMIT_SAFETY}
    if not given & set(S3_COMMIT_SAFETY):
        raise UserError(f"the lake {root} is on S3, where nothing makes a Delta commit atomic yet: set "
                        f"platform.storage_options AWS_S3_LOCKING_PROVIDER: dynamodb (with DELTA_DYNAMO_TABLE_NAME) "
                        f"or conditional_put: etag (a store with conditional writes); AWS_S3_ALLOW_UNSAFE_RENAME: "
                        f"'true' opts out, for a single writer such as a local S3 emulator")


class Lake:
    """The Delta tables of one project."""

    def __init__(self, root: str, storage_options: dict[str, str] | None = None):
        self.root = root if is_remote(root) else str(Path(root.removeprefix("file://")).resolve())
        self.storage_options = dict(storage_options or {}) or None
        check_atomic_commits(self.root, self.storage_options or {})

    @classmethod
    def from_platform(cls, platform: PlatformSpec) -> "Lake":
        return cls(platform.lake_uri, platform.credentials)

    # ----------------------------------------------------------------- naming

    def uri(self, name: str) -> str:
        if not re.match(NAME_PATTERN, name):
            raise UserError(f"table name {name!r} is not valid: use letters, digits and underscores")
        return f"{self.root.rstrip('/')}/{name}"

    def exists(self, name: str) -> bool:
        return DeltaTable.is_deltatable(self.uri(name), storage_options=self.storage_options)

    # ----------------------------------------------------------------- writing

    def create(self, name: str, schema: pa.Schema, description: str | None = None,
               add_missing: bool = False) -> DeltaTable:
        """Create the table with `schema` (change data feed on); an existing table must match it. `add_missing`: an
        existing table that lacks only nullable columns of `schema` gets them (rows written before read them as null)."""
        if self.exists(name):
            dt = self.open(name)
            if add_missing:
                dt = self._add_missing_columns(name, dt, schema)
            difference = schema_difference(schema, arrow_schema_of(dt))
            if difference:
                raise UserError(f"table '{name}' exists with another schema than the spec's: {difference}")
            return dt
        if not is_remote(self.root):
            Path(self.root).mkdir(parents=True, exist_ok=True)
        log.info("creating Delta table %s", self.uri(name))
        return DeltaTable.create(
            self.uri(name), schema, mode="ignore", name=name, description=description,
            configuration=CDF_CONFIG, storage_options=self.storage_options,
        )

    def _add_missing_columns(self, name: str, dt: DeltaTable, schema: pa.Schema) -> DeltaTable:
        have = set(arrow_schema_of(dt).names)
        missing = [f for f in schema if f.name not in have and f.nullable]
        if missing:
            log.info("adding columns %s to table %s", ", ".join(f.name for f in missing), name)
            dt.alter.add_columns([Field.from_arrow(f) for f in missing])
            dt = self.open(name)
        return dt

    def committed(self, name: str, batch_id: str) -> bool:
        """Whether a batch with this id has been committed to the table (Delta app transactions)."""
        if not self.exists(name):
            return False
        return self.open(name).transaction_version(BATCH_APP_PREFIX + batch_id) is not None

    def append(
        self,
        name: str,
        data: pa.Table | pa.RecordBatchReader | Iterable[pa.RecordBatch],
        batch_id: str | None = None,
        schema: pa.Schema | None = None,
        metadata: dict[str, str] | None = None,
    ) -> AppendResult:
        """Append in one atomic commit; with a `batch_id`, a batch already committed is skipped.

        The table's schema is enforced: columns are cast to it, and a mismatch is a UserError. Data held in memory (a
        table or a list of batches) is written again when a concurrent commit conflicts with it (delta-rs fails an
        append whose snapshot lost files to a concurrent delete, e.g. a retention delete): appends never depend on
        what they read, so the retry is safe."""
        if not self.exists(name):
            if schema is None:
                raise UserError(f"table '{name}' does not exist in {self.root} (ingest into it first)")
            self.create(name, schema)
        replayable, attempt = isinstance(data, (pa.Table, list, tuple)), 1
        while True:
            try:
                return self._append_once(name, data, batch_id, metadata)
            except CommitFailedError as exc:
                if batch_id is not None and self.committed(name, batch_id):  # a concurrent writer committed this batch
                    log.info("batch %s was committed concurrently to table %s", batch_id, name)
                    return AppendResult(name, self.latest_version(name), False, 0)
                if not replayable or attempt == APPEND_TRIES:
                    raise
                attempt += 1
                log.info("an append to %s conflicted with a concurrent commit (%s); writing it again", name,
                         str(exc).splitlines()[0])

    def _append_once(self, name: str, data, batch_id: str | None, metadata: dict[str, str] | None) -> AppendResult:
        dt = self.open(name)
        if batch_id is not None and dt.transaction_version(BATCH_APP_PREFIX + batch_id) is not None:
            log.info("batch %s is already in table %s; skipping", batch_id, name)
            return AppendResult(name, dt.version(), False, 0)
        counter = _RowCounter()
        reader = _conformed_reader(data, arrow_schema_of(dt), name, counter)
        properties = CommitProperties(
            custom_metadata={"mlray.batch_id": batch_id or "", **(metadata or {})},
            app_transactions=[Transaction(BATCH_APP_PREFIX + batch_id, 1)] if batch_id else None,
        )
        try:
            write_deltalake(dt, reader, mode="append", commit_properties=properties)
        except DeltaError:
            if counter.error is not None:  # the failure came from the data stream: surface it as it was
                raise counter.error from None
            raise
        if counter.error is not None:
            raise counter.error
        dt.update_incremental()
        return AppendResult(name, dt.version(), True, counter.rows)

    def write_dataset(self, name: str, dataset, batch_id: str, schema: pa.Schema | None = None,
                      metadata: dict[str, str] | None = None) -> AppendResult:
        """Append a Ray Dataset in one atomic commit, the data never passing through the driver.

        Workers write Parquet files; the driver commits them all in one Delta transaction carrying
        the batch id, so a batch already committed is skipped (before the dataset runs) and a retried
        job commits once. The table's schema is enforced, as in `append`."""
        from mlray.lake.sink import TransactionalDeltaSink  # Ray Data: heavy, imported only to write a dataset

        if not self.exists(name):
            if schema is None:
                raise UserError(f"table '{name}' does not exist in {self.root} (ingest into it first)")
            self.create(name, schema)
        dt = self.open(name)
        if dt.transaction_version(BATCH_APP_PREFIX + batch_id) is not None:
            log.info("batch %s is already in table %s; skipping", batch_id, name)
            return AppendResult(name, dt.version(), False, 0)
        sink = TransactionalDeltaSink(self.uri(name), name, arrow_schema_of(dt), BATCH_APP_PREFIX + batch_id,
                                      {"mlray.batch_id": batch_id, **(metadata or {})}, self.storage_options)
        dataset.write_datasink(sink)
        if not sink.committed:
            log.info("batch %s was committed concurrently to table %s", batch_id, name)
        return AppendResult(name, sink.version, sink.committed, sink.rows if sink.committed else 0)

    # ----------------------------------------------------------------- reading

    def open(self, name: str, version: int | None = None, as_of: datetime | str | None = None) -> DeltaTable:
        """The table, at its latest version, a pinned `version`, or as of a timestamp."""
        uri = self.uri(name)
        try:
            dt = DeltaTable(uri, version=version, storage_options=self.storage_options)
        except TableNotFoundError:
            raise UserError(f"table '{name}' does not exist in {self.root}") from None
        except DeltaError as exc:
            if version is not None and "version" in str(exc).lower():
                raise UserError(f"table '{name}' has no version {version} (latest: {self.latest_version(name)})") from None
            raise
        if as_of is not None:
            when = datetime.fromisoformat(as_of) if isinstance(as_of, str) else as_of
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            try:
                dt.load_as_version(when)
            except DeltaError as exc:
                raise UserError(f"table '{name}' has no version as of {when.isoformat()}: {exc}") from None
        return dt

    def latest_version(self, name: str) -> int:
        return DeltaTable(self.uri(name), storage_options=self.storage_options).version()

    def read(self, name: str, version: int | None = None, as_of: datetime | str | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """A whole snapshot in memory (small tables; use `dataset` for large ones)."""
        dt = self.open(name, version, as_of)
        return dt.to_pyarrow_dataset().to_table(columns=columns)

    def dataset(self, name: str, version: int | None = None, columns: list[str] | None = None, **read_args):
        """A pinned snapshot as a Ray Dataset, read in parallel, only the named columns.

        Blocks are sized for the cluster: at least one per file and per CPU, at most ~256 MiB in
        memory each (Ray's default cuts a one-row-group file into dozens of tiny blocks, whose
        overhead on a small machine costs more than the work)."""
        # Ray: loaded only when a table is read as a Ray Dataset; the lake's other callers (the CLI) stay Ray-free
        import ray
        import ray.data

        dt = self.open(name, version)
        if "override_num_blocks" not in read_args:
            files = dt.get_add_actions(flatten=True)
            size = sum(pa.table(files).column("size_bytes").to_pylist()) if files.num_rows else 0
            cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 1
            read_args["override_num_blocks"] = max(files.num_rows, cpus, math.ceil(4 * size / BLOCK_BYTES), 1)
        return ray.data.read_delta(
            self.uri(name), version=dt.version(), storage_options=self.storage_options, columns=columns, **read_args
        )

    def changes_since(self, name: str, version: int, columns: list[str] | None = None) -> pa.Table:
        """Rows changed after `version`, with `_change_type` and `_commit_version`.

        Uses the change data feed when the table has it, else the files added since. Of `columns`, those the table
        lacks (an older table, before a column was added) are left out."""
        dt = self.open(name)
        latest = dt.version()
        if columns is not None:
            present = set(arrow_schema_of(dt).names)
            columns = [c for c in columns if c in present]
        if version >= latest:
            schema = arrow_schema_of(dt)
            empty = schema.empty_table() if columns is None else schema.empty_table().select(columns)
            return empty.append_column("_change_type", pa.array([], pa.string())).append_column(
                "_commit_version", pa.array([], pa.int64()))
        if dt.metadata().configuration.get("delta.enableChangeDataFeed") == "true":
            meta = ["_change_type", "_commit_version", "_commit_timestamp"]  # a projection must name them to keep them
            changes = pa.table(dt.load_cdf(starting_version=version + 1, columns=columns and [*columns, *meta]))
            changes = changes.drop_columns(["_commit_timestamp"])
            return _plain_types(changes).set_column(
                changes.schema.get_field_index("_commit_version"), "_commit_version",
                changes.column("_commit_version").cast(pa.int64()))
        return self._files_added_since(name, dt, version, columns)

    def _files_added_since(self, name: str, dt: DeltaTable, version: int, columns: list[str] | None) -> pa.Table:
        before = set(self.open(name, version).file_uris())
        added = [uri for uri in dt.file_uris() if uri not in before]
        data = pads.dataset(added, schema=arrow_schema_of(dt), format="parquet").to_table(columns=columns)
        return data.append_column("_change_type", pa.array(["insert"] * data.num_rows, pa.string())).append_column(
            "_commit_version", pa.array([dt.version()] * data.num_rows, pa.int64()))

    def history(self, name: str, limit: int | None = None) -> list[dict]:
        """Commits, newest first: version, timestamp, operation, rows added, mlray metadata."""
        entries = []
        for commit in self.open(name).history(limit):
            metrics = commit.get("operationMetrics", {})
            entries.append({
                "version": commit.get("version"),
                "timestamp": datetime.fromtimestamp(commit["timestamp"] / 1000, tz=timezone.utc).isoformat(),
                "operation": commit.get("operation"),
                "rows_added": metrics.get("num_added_rows"),
                "batch_id": commit.get("mlray.batch_id") or None,
                "source": commit.get("mlray.source"),
            })
        return entries

    def filesystem(self, uri: str | None = None) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and path for `uri` (default: the lake root), with the lake's storage options, so
        landing folders on object storage read with the credentials the tables use."""
        return filesystem_of(self.root if uri is None else str(uri), self.storage_options)

    def list(self) -> list[TableInfo]:
        fs, base = self.filesystem()
        try:
            entries = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        except OSError as exc:
            raise UserError(f"cannot list the lake at {self.root}: {exc}") from None
        tables = []
        for entry in sorted(entries, key=lambda e: e.base_name):
            if entry.type == pafs.FileType.Directory and self.exists(entry.base_name):
                dt = self.open(entry.base_name)
                last = dt.history(1)[0]["timestamp"]
                tables.append(TableInfo(entry.base_name, self.uri(entry.base_name), dt.version(),
                                        row_count(dt), len(arrow_schema_of(dt)),
                                        datetime.fromtimestamp(last / 1000, tz=timezone.utc)))
        return tables


class _RowCounter:
    def __init__(self):
        self.rows = 0
        self.error: BaseException | None = None


def _plain_types(table: pa.Table) -> pa.Table:
    """string_view (what delta-rs hands back in places) → string, so schemas compare equal."""
    fields = [pa.field(f.name, pa.string(), f.nullable) if pa.types.is_string_view(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


def _conformed_reader(data, schema: pa.Schema, name: str, counter: _RowCounter) -> pa.RecordBatchReader:
    """Stream `data` cast to the table's schema; an error in the stream is kept for the caller."""
    batches: Iterable[pa.RecordBatch] = data.to_batches() if isinstance(data, pa.Table) else data

    def generate():
        try:
            for batch in batches:
                table = conform(pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch,
                                schema, name)
                counter.rows += table.num_rows
                yield from table.to_batches()
        except BaseException as exc:  # noqa: BLE001 - re-raised by `append` once the write has aborted
            counter.error = exc
            raise

    return pa.RecordBatchReader.from_batches(schema, generate())
