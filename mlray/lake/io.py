"""What the Delta tables and the Ray Data sink share, below both: where a location lives (its pyarrow filesystem) and
how data is made to fit a table's schema."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from mlray.errors import UserError


def schema_difference(expected: pa.Schema, actual: pa.Schema, compare_types: bool = True) -> str | None:
    """'missing columns a, b; unexpected columns c; x is string (expected int64)', or None if they match."""
    want = {f.name: f.type for f in expected}
    have = {f.name: f.type for f in actual}
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    changed = [f"{n} is {have[n]} (expected {want[n]})" for n in want
               if compare_types and n in have and have[n] != want[n]]
    parts = ([f"missing columns {', '.join(missing)}"] if missing else []) + \
            ([f"unexpected columns {', '.join(extra)}"] if extra else []) + changed
    return "; ".join(parts) or None


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def filesystem_of(uri: str, storage_options: dict[str, str] | None = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it for a local path or a URI; S3 takes deltalake's storage options
    (AWS_ENDPOINT_URL, keys, region), so both read the same bucket the same way."""
    if uri.startswith(("s3://", "s3a://")) and storage_options:
        options = {k.upper(): v for k, v in storage_options.items()}
        endpoint = options.get("AWS_ENDPOINT_URL") or options.get("AWS_ENDPOINT")
        fs = pafs.S3FileSystem(
            access_key=options.get("AWS_ACCESS_KEY_ID"), secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
            session_token=options.get("AWS_SESSION_TOKEN"), region=options.get("AWS_REGION"),
            endpoint_override=endpoint, scheme="http" if (endpoint or "").startswith("http://") else "https",
        )
        return fs, uri.split("://", 1)[1]
    if not is_remote(uri):
        return pafs.LocalFileSystem(), str(Path(uri.removeprefix("file://")).resolve())
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{uri}: cannot open this location ({str(exc).splitlines()[0]})") from None


def conform(table: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    """`table` with the table's columns, in its order, cast to its types; a mismatch is a UserError."""
    difference = schema_difference(schema, table.schema, compare_types=False)
    if difference:
        raise UserError(f"data for table '{name}' does not match its columns: {difference}")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise UserError(f"table '{name}': data does not fit the table's schema: {exc}") from None
