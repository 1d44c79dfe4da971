"""Exactly-once ingestion of CSV, Parquet and JSON-lines files into a Delta table, with quarantine.

Sources are local paths or object-store URIs (s3://, gs://), read through pyarrow filesystems with
the lake's storage options. Each file is one batch whose id is its content hash, committed with a Delta application
transaction, so a re-run (or a retry after a crash) never ingests a file twice. Files stream
through Ray Data: workers parse and check rows, the driver splits good rows into the table and
bad rows, with a reason each, into `<table>_quarantine`, keeping their raw values as text.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import logging
import posixpath
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlray.errors import UserError
from mlray.lake.io import filesystem_of
from mlray.lake.landing import PARSE_ERROR, RAW, json_object, numbered_lines, read_csv, read_json_lines
from mlray.lake.rules import Violation, bad_rows_mask, check_rows, row_reasons
from mlray.lake.schema import TIMESTAMP_TYPE, arrow_schema, as_text, text_schema
from mlray.lake.tables import Lake
from mlray.spec import TableSpec

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl"}
REASON, SOURCE, INGESTED_AT = "_reason", "_source", "_ingested_at"
TEXT_PREFIX = "__text__"
INSPECT_LINES = 100  # JSON lines looked at for the file's fields
MAX_REASON = 1000  # characters of a reason kept: it quotes the bad value, which may be huge
OUT_OF_RANGE = {  # the shape of a number too large for its type, and what its reason says
    "int": (r"^[+-]?\d+$", "is out of range for a 64-bit integer"),
    "float": (r"(?i)^[+-]?inf(inity)?$", "is out of range for a 64-bit float"),
}


def quarantine_name(table: str) -> str:
    return f"{table}_quarantine"


def quarantine_schema(table: TableSpec) -> pa.Schema:
    return text_schema(table).append(pa.field(REASON, pa.string(), nullable=False)).append(
        pa.field(SOURCE, pa.string())).append(pa.field(RAW, pa.string())).append(pa.field(INGESTED_AT, TIMESTAMP_TYPE))


@dataclass(frozen=True)
class Found:
    """One file of a source: its name as shown (a local path or a URI, as the user named it), and where its
    filesystem finds it."""

    path: str
    location: str
    fs: pafs.FileSystem


@dataclass(frozen=True)
class SourceFile(Found):
    """A found file, inspected: its format and content hash."""

    format: str
    fingerprint: str

    @property
    def batch_id(self) -> str:
        return f"ingest:{self.fingerprint}"


@dataclass
class FileResult:
    path: str
    status: str  # 'ingested' or 'skipped'
    rows_read: int = 0
    rows_landed: int = 0
    rows_quarantined: int = 0
    table_version: int | None = None


@dataclass
class IngestReport:
    table: str
    quarantine_table: str
    files: list[FileResult] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def rows_landed(self) -> int:
        return sum(f.rows_landed for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        return sum(f.rows_quarantined for f in self.files)

    def to_dict(self) -> dict:
        return {"table": self.table, "quarantine_table": self.quarantine_table, "rows_read": self.rows_read,
                "rows_landed": self.rows_landed, "rows_quarantined": self.rows_quarantined,
                "files": [asdict(f) for f in self.files]}


# --------------------------------------------------------------------------- discovering and inspecting


def _shown(source: str, base: str, location: str) -> str:
    """`location` named the way the user named `source` (a URI stays a URI)."""
    return source.rstrip("/") + location[len(base.rstrip("/")):] if location != base else source


def discover(source: str | Path, storage_options: dict[str, str] | None = None) -> list[Found]:
    """The files to ingest: the file itself, or every supported file in a landing folder (sorted)."""
    source = str(source)
    fs, base = filesystem_of(source, storage_options)
    try:
        info = fs.get_file_info(base)
        entries = fs.get_file_info(pafs.FileSelector(base, recursive=True)) \
            if info.type == pafs.FileType.Directory else []
    except OSError as exc:
        raise UserError(f"{source}: cannot be listed ({str(exc).splitlines()[0]})") from None
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"{source}: no such file or folder")
    if info.type == pafs.FileType.File:
        if _suffix(base) not in FORMATS:
            raise UserError(f"{source}: unsupported file type '{_suffix(base)}' (expected {', '.join(sorted(FORMATS))})")
        return [Found(source, base, fs)]
    files = sorted(e.path for e in entries if e.type == pafs.FileType.File and _suffix(e.path) in FORMATS
                   and not any(part.startswith((".", "_")) for part in e.path[len(base):].strip("/").split("/")))
    if not files:
        raise UserError(f"{source}: the folder holds no {', '.join(sorted(FORMATS))} files")
    return [Found(_shown(source, base, f), f, fs) for f in files]


def _suffix(path: str) -> str:
    return posixpath.splitext(path)[1].lower()


def fingerprint(found: Found) -> str:
    digest = hashlib.sha256()
    with found.fs.open_input_stream(found.location) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _columns_of(found: Found, fmt: str) -> list[str] | None:
    """The file's column names; raises if unreadable. For JSON lines, which may omit nulls: the fields of the first
    object with fields among the first INSPECT_LINES lines, or None (then each line meets its own checks)."""
    if fmt == "parquet":
        with found.fs.open_input_file(found.location) as handle:
            return pq.read_schema(handle).names
    with found.fs.open_input_stream(found.location) as handle:
        if fmt == "csv":  # the header only, decoded line by line: a bad byte further down is a row's problem
            return next(csv.reader(line.decode("utf-8-sig") for line in io.BufferedReader(handle)), [])
        for _, line in itertools.islice(numbered_lines(handle), INSPECT_LINES):
            row = json_object(line)[0]
            if row:
                return list(row)
    return None


def inspect(found: Found, table: TableSpec, table_name: str) -> SourceFile:
    """Check a file can be read and has the declared columns, before anything is committed."""
    path, fmt = found.path, FORMATS[_suffix(found.location)]
    try:
        columns = _columns_of(found, fmt)
    except (OSError, UnicodeDecodeError, ValueError, pa.ArrowException) as exc:
        raise UserError(f"{path}: cannot be read as {fmt}: {str(exc).splitlines()[0]}") from None
    declared = list(table.columns)
    unexpected = [c for c in columns or [] if c not in table.columns]
    missing = [c for c in declared if c not in columns] if fmt != "jsonl" else []
    if unexpected or missing or columns == []:
        problems = ([f"missing columns {', '.join(missing)}"] if missing else []) + \
                   ([f"unexpected columns {', '.join(unexpected)}"] if unexpected else [])
        raise UserError(f"{path}: columns do not match table '{table_name}': "
                        f"{'; '.join(problems) or 'no columns'} (declared: {', '.join(declared)})")
    return SourceFile(path, found.location, found.fs, fmt, fingerprint(found))


# --------------------------------------------------------------------------- reading and checking (Ray workers)


def check_batch(batch: pa.Table, table: TableSpec) -> pa.Table:
    """Typed columns, a reason per bad row, and the bad rows' raw values as text."""
    batch = _decoded(batch, table)
    typed, violations = check_rows(batch, table)
    violations = _range_violations(violations, batch, typed, table)
    reasons = row_reasons(violations, batch.num_rows)
    bad = bad_rows_mask(violations, batch.num_rows)
    if PARSE_ERROR in batch.column_names:
        parse_error = batch.column(PARSE_ERROR).combine_chunks()
        reasons = pc.coalesce(parse_error, reasons)
        bad = pc.or_(bad, pc.is_valid(parse_error))
    any_bad = pc.any(bad).as_py()
    out = typed.append_column(REASON, _shortened(reasons) if any_bad else reasons)
    none = pa.scalar(None, pa.string())
    for name in table.columns:  # raw values as text, kept for the bad rows only
        text = pc.if_else(bad, as_text(batch.column(name).combine_chunks()), none) if any_bad \
            else pa.nulls(batch.num_rows, pa.string())
        out = out.append_column(TEXT_PREFIX + name, text)
    raw_line = batch.column(RAW).combine_chunks() if RAW in batch.column_names else pa.nulls(batch.num_rows, pa.string())
    return out.append_column(RAW, raw_line)


def _decoded(batch: pa.Table, table: TableSpec) -> pa.Table:
    """Binary columns (CSV is read as bytes) as text; a value that is not UTF-8 is shown escaped, and its row gets a
    parse error. One vectorised cast per column; value by value only for a column that holds bad bytes."""
    errors = batch.column(PARSE_ERROR).combine_chunks() if PARSE_ERROR in batch.column_names else None
    for name in table.columns:
        kind = batch.schema.field(name).type
        if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
            continue
        values = batch.column(name).combine_chunks()
        try:
            text = pc.cast(values, pa.string())
        except pa.ArrowInvalid:
            text, error = _decode_each(values, name)
            errors = error if errors is None else pc.coalesce(errors, error)
        batch = batch.set_column(batch.column_names.index(name), name, text)
    if errors is None:
        return batch
    if PARSE_ERROR in batch.column_names:
        return batch.set_column(batch.column_names.index(PARSE_ERROR), PARSE_ERROR, errors)
    return batch.append_column(PARSE_ERROR, errors)


def _decode_each(values: pa.Array, name: str) -> tuple[pa.Array, pa.Array]:
    """(the values as text, bad bytes escaped; a parse error where the bytes are not UTF-8)."""
    texts, errors = [], []
    for value in values.to_pylist():
        try:
            texts.append(None if value is None else value.decode("utf-8"))
            errors.append(None)
        except UnicodeDecodeError as exc:
            texts.append(value.decode("utf-8", "backslashreplace"))
            errors.append(f"{name}: invalid UTF-8 (byte 0x{value[exc.start]:02x} at position {exc.start})")
    return pa.array(texts, pa.string()), pa.array(errors, pa.string())


def _range_violations(violations: list[Violation], raw: pa.Table, typed: pa.Table, table: TableSpec) -> list[Violation]:
    """Numbers too large for their column said as such: an integer beyond 64 bits is not 'not an integer', and a
    float that overflows to infinity (or is written as one) does not land."""
    out = []
    for violation in violations:
        kind = table.columns[violation.column].type
        if violation.rule == "type" and kind in OUT_OF_RANGE:
            shape = pc.match_substring_regex(pc.utf8_trim_whitespace(as_text(violation.values)), OUT_OF_RANGE[kind][0])
            huge = pc.and_(violation.mask, pc.fill_null(shape, False))
            if pc.any(huge).as_py():
                out.append(Violation(violation.column, "range", OUT_OF_RANGE[kind][1], huge, violation.values))
                violation = dataclasses.replace(violation, mask=pc.and_(violation.mask, pc.invert(huge)))
        out.append(violation)
    for name, col in table.columns.items():
        infinite = pc.fill_null(pc.is_inf(typed.column(name)), False) if col.type == "float" else None
        if infinite is not None and pc.any(infinite).as_py():
            out.append(Violation(name, "range", OUT_OF_RANGE["float"][1], infinite, raw.column(name).combine_chunks()))
    return [v for v in out if v.count]


def _shortened(reasons: pa.Array) -> pa.Array:
    """Reasons cut to MAX_REASON characters (a reason quotes the value, which may be huge)."""
    long = pc.fill_null(pc.greater(pc.utf8_length(reasons), MAX_REASON), False)
    cut = pc.binary_join_element_wise(pc.utf8_slice_codeunits(reasons, 0, MAX_REASON), "…", "")
    return pc.if_else(long, cut, reasons)


def _read(source: SourceFile, table: TableSpec):
    """The file as a Ray Dataset of checked rows (streamed, never whole in memory)."""
    import ray.data  # Ray: loaded only when a file is ingested (the CLI imports this module and must stay Ray-free)

    if source.format == "parquet":
        ds = ray.data.read_parquet(source.location, filesystem=source.fs)
    else:
        read = read_csv if source.format == "csv" else read_json_lines
        ds = ray.data.from_items([{"location": source.location}]).map_batches(
            read, fn_kwargs={"fs": source.fs, "columns": list(table.columns)}, batch_format="pyarrow", batch_size=1)
    return ds.map_batches(check_batch, fn_kwargs={"table": table}, batch_format="pyarrow", batch_size=None)


# --------------------------------------------------------------------------- committing (driver)


class _Splitter:
    """Splits checked batches into good rows (streamed to the table) and bad rows (spooled to disk)."""

    def __init__(self, table: TableSpec, source: SourceFile, spool: Path, ingested_at: datetime):
        self.table, self.source, self.ingested_at = table, source, ingested_at
        self.good_schema = arrow_schema(table)
        self.bad_schema = quarantine_schema(table)
        self.spool_path = spool
        self.spool = pq.ParquetWriter(spool, self.bad_schema)
        self.rows_read = self.rows_good = self.rows_bad = 0

    def good_batches(self, checked: Iterator[pa.Table]) -> Iterator[pa.RecordBatch]:
        for batch in checked:
            self.rows_read += batch.num_rows
            is_bad = pc.is_valid(batch.column(REASON))
            bad = batch.filter(is_bad)
            if bad.num_rows:
                self._spool(bad)
            good = batch.filter(pc.invert(is_bad)).select(self.good_schema.names)
            self.rows_good += good.num_rows
            yield from good.cast(self.good_schema).to_batches()

    def _spool(self, bad: pa.Table) -> None:
        self.rows_bad += bad.num_rows
        columns = {name: bad.column(TEXT_PREFIX + name) for name in self.table.columns}
        columns.update({REASON: bad.column(REASON), SOURCE: pa.array([self.source.path] * bad.num_rows),
                        RAW: bad.column(RAW),
                        INGESTED_AT: pa.array([self.ingested_at] * bad.num_rows, TIMESTAMP_TYPE)})
        self.spool.write_table(pa.table(columns, schema=self.bad_schema))

    def spooled(self) -> Iterator[pa.RecordBatch]:
        self.spool.close()
        return pq.ParquetFile(self.spool_path).iter_batches() if self.rows_bad else iter(())


def _ingest_file(lake: Lake, name: str, table: TableSpec, source: SourceFile, workdir: Path) -> FileResult:
    quarantine = quarantine_name(name)
    need_main = not lake.committed(name, source.batch_id)
    need_quarantine = not lake.committed(quarantine, source.batch_id)
    if not (need_main or need_quarantine):
        return FileResult(source.path, "skipped", table_version=lake.latest_version(name))
    splitter = _Splitter(table, source, workdir / f"{source.fingerprint}.parquet", datetime.now(timezone.utc))
    batches = _read(source, table).iter_batches(batch_format="pyarrow", batch_size=None)
    metadata = {"mlray.source": source.path}
    try:
        good = splitter.good_batches(batches)
        if need_main:
            result = lake.append(name, good, batch_id=source.batch_id, schema=splitter.good_schema, metadata=metadata)
        else:  # a crash came between the two commits last time: only the quarantine is missing
            for _ in good:
                pass
            result = None
        if need_quarantine:
            lake.append(quarantine, splitter.spooled(), batch_id=source.batch_id, schema=splitter.bad_schema,
                        metadata=metadata)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a file that fails mid-way: say which, keep the cause
        raise UserError(f"{source.path}: cannot be ingested ({_what_failed(exc)[:300]}); nothing from this file was "
                        "committed") from exc
    version = result.version if result else lake.latest_version(name)
    return FileResult(source.path, "ingested", splitter.rows_read, splitter.rows_good, splitter.rows_bad, version)


def _what_failed(exc: BaseException) -> str:
    """The innermost cause in one line (a Ray task error wraps the worker's exception, with a traceback)."""
    while isinstance(inner := getattr(exc, "cause", None) or exc.__cause__, BaseException):
        exc = inner
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def ingest(lake: Lake, name: str, table: TableSpec, source: str | Path,
           on_file: Callable[[FileResult], None] | None = None) -> IngestReport:
    """Ingest a file or a landing folder (a local path or a URI) into table `name`; every file exactly once."""
    files = [inspect(found, table, name) for found in discover(source, lake.storage_options)]  # all checked first
    lake.create(name, arrow_schema(table))
    lake.create(quarantine_name(name), quarantine_schema(table))
    report = IngestReport(name, quarantine_name(name))
    seen: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="mlray-ingest-") as workdir:
        for source_file in files:
            if source_file.fingerprint in seen:  # the same content twice in one landing folder
                result = FileResult(source_file.path, "skipped", table_version=lake.latest_version(name))
            else:
                result = _ingest_file(lake, name, table, source_file, Path(workdir))
            seen.add(source_file.fingerprint)
            report.files.append(result)
            if on_file:
                on_file(result)
    return report
