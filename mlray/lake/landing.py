"""Reading landing files as a stream of rows as text, one bad line at a time: a line (JSON) or a row (CSV) that cannot
be parsed for any reason (invalid UTF-8, invalid JSON, nesting too deep, a number Python cannot read, the wrong number
of fields) becomes a row with no values, its raw text and a parse error naming the line; the file's other lines go on.
`mlray.lake.ingest` checks and lands what these readers yield."""

from __future__ import annotations

import io
import itertools
import json
import re
import sys
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs

RAW, PARSE_ERROR = "_raw", "_parse_error"
JSON_BATCH_LINES = 50_000
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def numbered_lines(handle) -> Iterator[tuple[int, bytes]]:
    """A binary stream's non-blank lines, numbered from 1 and split on \\n only (a JSON string may hold U+2028)."""
    for number, line in enumerate(io.BufferedReader(handle), start=1):
        if line.strip():
            yield number, line.rstrip(b"\r\n")


def json_object(line: bytes) -> tuple[dict | None, str | None, str]:
    """(the line's JSON object or None, why it is not one, the line as text for the quarantine)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"invalid UTF-8 (byte 0x{line[exc.start]:02x} at position {exc.start})", \
            line.decode("utf-8", "backslashreplace")
    try:
        parsed = json.loads(text)
        if _SURROGATE_ESCAPE.search(text):  # "\\ud800" parses, but a lone surrogate cannot be stored as UTF-8
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg})", text
    except UnicodeEncodeError:
        return None, "invalid Unicode (an unpaired surrogate escape)", text
    except RecursionError:
        return None, f"nested too deeply (beyond the parser's limit of about {sys.getrecursionlimit()} levels)", text
    except ValueError as exc:  # an integer of over 4300 digits
        return None, f"cannot be parsed ({str(exc).split(';')[0]})", text
    if not isinstance(parsed, dict):
        return None, f"not a JSON object (a JSON {_JSON_KINDS.get(type(parsed), 'value')})", text
    return parsed, None, text


def _json_texts(row: dict, columns: list[str]) -> list[str | None]:
    """The row's declared fields as text (objects and arrays as JSON)."""
    return [None if value is None else
            json.dumps(value) if isinstance(value, (dict, list)) else
            ("true" if value else "false") if isinstance(value, bool) else str(value)
            for value in map(row.get, columns)]


def _parse_json_lines(lines: list[tuple[int, bytes]], columns: list[str]) -> pa.Table:
    """Numbered lines → one text column per declared column, plus the raw line and the parse error of bad lines."""
    cells, raws, errors, declared = [], [], [], set(columns)
    for number, line in lines:
        row, error, text = json_object(line)
        extra = [k for k in row if k not in declared] if row else []
        error = error or (f"unexpected fields {', '.join(extra)}" if extra else None)
        try:
            cells.append(_json_texts(row or {}, columns))
        except RecursionError:  # a field nested too deeply to write back as JSON text
            cells.append([None] * len(columns))
            error = error or "nested too deeply to keep as text"
        raws.append(text if error else None)
        errors.append(f"line {number}: {error}" if error else None)
    by_column = list(zip(*cells)) if cells else [[] for _ in columns]
    out = {name: pa.array(values, pa.string()) for name, values in zip(columns, by_column)}
    return pa.table({**out, RAW: pa.array(raws, pa.string()), PARSE_ERROR: pa.array(errors, pa.string())})


def read_json_lines(files: pa.Table, fs: pafs.FileSystem, columns: list[str]) -> Iterator[pa.Table]:
    """Each file's lines, streamed and parsed in batches; read as bytes, so a bad byte spoils its line only."""
    for location in files.column("location").to_pylist():
        with fs.open_input_stream(location) as handle:
            lines = numbered_lines(handle)
            while batch := list(itertools.islice(lines, JSON_BATCH_LINES)):
                yield _parse_json_lines(batch, columns)


def read_csv(files: pa.Table, fs: pafs.FileSystem, columns: list[str]) -> Iterator[pa.Table]:
    """Each file's rows, streamed, as bytes (decoded in `check_batch`); a row with the wrong number of fields
    comes as a row with a parse error instead of failing the file."""
    ragged: list[tuple[str, str]] = []

    def keep_ragged(row) -> str:
        ragged.append((row.text, f"row {row.number}: expected {row.expected_columns} fields, found {row.actual_columns}"))
        return "skip"

    options = {"read_options": pacsv.ReadOptions(use_threads=False),
               "parse_options": pacsv.ParseOptions(invalid_row_handler=keep_ragged),
               "convert_options": pacsv.ConvertOptions(column_types={c: pa.binary() for c in columns},
                                                       strings_can_be_null=True)}
    for location in files.column("location").to_pylist():
        with fs.open_input_stream(location) as handle:
            for batch in pacsv.open_csv(handle, **options):
                yield _with_parse_errors(pa.Table.from_batches([batch]).select(columns), [], [])
                yield from _unparsed_rows(columns, ragged)
        yield from _unparsed_rows(columns, ragged)


def _unparsed_rows(columns: list[str], ragged: list[tuple[str, str]]) -> Iterator[pa.Table]:
    """The rows the CSV reader skipped (taken from `ragged`): no values, their text and why."""
    if ragged:
        values = pa.table({name: pa.nulls(len(ragged), pa.binary()) for name in columns})
        raws, errors = zip(*ragged)
        ragged.clear()
        yield _with_parse_errors(values, list(raws), list(errors))


def _with_parse_errors(rows: pa.Table, raws: list[str], errors: list[str]) -> pa.Table:
    """`rows` with the raw line and parse error columns (all null when none are given)."""
    raw = pa.array(raws, pa.string()) if raws else pa.nulls(rows.num_rows, pa.string())
    error = pa.array(errors, pa.string()) if errors else pa.nulls(rows.num_rows, pa.string())
    return rows.append_column(RAW, raw).append_column(PARSE_ERROR, error)
