"""Spec column types as Arrow types, and turning raw values (strings or loosely typed) into them.

`conform` is vectorised: a column parses in one Arrow cast; only when a cast fails does it
find the offending rows, so a few bad values cost little and never fail the whole batch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlray.spec import TableSpec

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "timestamp": TIMESTAMP_TYPE,
    "date": pa.date32(),
}
TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "a boolean", "timestamp": "a timestamp", "date": "a date"}

# Shapes accepted from text (CSV, JSON); anything else is a parse failure for that row.
_TEXT_PATTERNS = {
    "int": r"^[+-]?\d+$",
    "float": r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$",
    "bool": r"^(true|false)$",
    "timestamp": r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?$",
    "date": r"^\d{4}-\d{2}-\d{2}$",
}


def stable_hash(values: pa.Array) -> np.ndarray:
    """64-bit hashes of values that do not change across processes, runs or versions."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return pd.util.hash_array(np.asarray(values.to_numpy(zero_copy_only=False), dtype=object), categorize=False)


def arrow_schema(table: TableSpec) -> pa.Schema:
    return pa.schema(
        [pa.field(name, ARROW_TYPES[col.type], nullable=col.nullable) for name, col in table.columns.items()]
    )


def text_schema(table: TableSpec) -> pa.Schema:
    """Every declared column as a nullable string: how raw and quarantined rows are kept."""
    return pa.schema([pa.field(name, pa.string()) for name in table.columns])


def as_text(values: pa.Array) -> pa.Array:
    if pa.types.is_string(values.type):
        return values
    if pa.types.is_large_string(values.type) or pa.types.is_string_view(values.type):
        return pc.cast(values, pa.string())
    if pa.types.is_timestamp(values.type):
        return pc.strftime(values, format="%Y-%m-%dT%H:%M:%S.%f%z" if values.type.tz else "%Y-%m-%dT%H:%M:%S.%f")
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), pa.string())
    try:
        return pc.cast(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in values.to_pylist()], pa.string())


def _normalise_text(values: pa.Array, kind: str) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(values)
    if kind == "bool":
        lowered = pc.utf8_lower(trimmed)
        truthy = pc.is_in(lowered, pa.array(["true", "t", "yes", "y", "1"]))
        falsy = pc.is_in(lowered, pa.array(["false", "f", "no", "n", "0"]))
        return pc.if_else(truthy, "true", pc.if_else(falsy, "false", trimmed))
    if kind == "timestamp":  # a bare date or a time without a zone is read as UTC
        zoned = pc.match_substring_regex(trimmed, r"(Z|[+-]\d{2}:?\d{2})$")
        with_time = pc.if_else(pc.match_substring_regex(trimmed, r"^\d{4}-\d{2}-\d{2}$"),
                               pc.binary_join_element_wise(trimmed, "T00:00:00", ""), trimmed)
        return pc.if_else(zoned, with_time, pc.binary_join_element_wise(with_time, "Z", ""))
    return trimmed


def _cast_each(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """Slow path, only after a vectorised cast failed: cast value by value to find the bad ones."""
    out, ok = [], []
    for value in values:
        try:
            out.append(pc.cast(pa.array([value.as_py()], values.type), target)[0].as_py())
            ok.append(True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError):
            out.append(None)
            ok.append(False)
    return pa.array(out, target), pa.array(ok, pa.bool_())


def parse_column(values: pa.Array, kind: str) -> tuple[pa.Array, pa.Array]:
    """Values → the column's Arrow type; returns (typed values, mask of values that failed to parse)."""
    target = ARROW_TYPES[kind]
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.type == target:
        typed, failed = values, _no_failures(len(values))
    elif pa.types.is_string(values.type) or pa.types.is_large_string(values.type) or kind == "string":
        typed, failed = _parse_text(as_text(values), kind)
    else:
        try:
            typed, failed = pc.cast(values, target), _no_failures(len(values))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            typed, failed = _parse_text(as_text(values), kind)
    if kind == "float":  # NaN is a missing value, so not-null and range rules see it
        typed = pc.if_else(pc.is_nan(typed), pa.scalar(None, pa.float64()), typed)
    return typed, pc.fill_null(failed, False)


def _no_failures(length: int) -> pa.BooleanArray:
    return pa.array(np.zeros(length, dtype=bool))


def _parse_text(text: pa.Array, kind: str) -> tuple[pa.Array, pa.Array]:
    target = ARROW_TYPES[kind]
    if kind == "string":
        return text, _no_failures(len(text))
    none = pa.scalar(None, pa.string())
    normal = _normalise_text(text, kind)
    normal = pc.if_else(pc.equal(normal, ""), none, normal)  # a blank is a missing value, not a bad one
    shaped = pc.match_substring_regex(normal, _TEXT_PATTERNS[kind])
    candidate = pc.if_else(shaped, normal, none)
    try:
        typed = pc.cast(candidate, target)
        ok = pc.or_kleene(shaped, pc.is_null(normal))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        typed, ok = _cast_each(candidate, target)
        ok = pc.or_kleene(pc.and_kleene(ok, shaped), pc.is_null(normal))
    return typed, pc.invert(pc.fill_null(ok, False))
