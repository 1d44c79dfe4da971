"""The one feature transform: raw rows → model inputs.

Training (Ray Data `map_batches`), batch inference and online serving all call `transform`;
there is no second implementation. It is pure and vectorised over Arrow/NumPy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlray.errors import UserError
from mlray.features.fitted import FittedBoolean, FittedCategorical, FittedFeatures, FittedNumeric, FittedTimestamp

VALUE_TYPES = {"string": pa.string(), "int": pa.int64(), "bool": pa.bool_()}


def as_arrow(batch: Any) -> pa.Table:
    """Arrow table from a pa.Table/RecordBatch, a pandas DataFrame, or a dict of columns."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas, without importing it
        return pa.Table.from_pandas(batch, preserve_index=False)
    if isinstance(batch, dict):  # object arrays go through Python values, which Arrow can type
        return pa.table({k: v.tolist() if isinstance(v, np.ndarray) and v.dtype == object else v
                         for k, v in batch.items()})
    raise TypeError(f"transform takes an Arrow table, a pandas DataFrame or a dict of columns, not {type(batch)}")


def _column(table: pa.Table, feature) -> pa.Array:
    if feature.source not in table.column_names:
        raise UserError(f"feature '{feature.name}' needs column '{feature.source}', which the input lacks")
    column = table.column(feature.source)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _missing(feature, values: pa.Array) -> UserError:
    rows = np.flatnonzero(pc.is_null(values).to_numpy(zero_copy_only=False))[:5].tolist()
    return UserError(f"feature '{feature.name}': {values.null_count} missing value(s) in column '{feature.source}'"
                     f" (rows {rows}) and no default declared for it")


def numeric_prepare(values: np.ndarray, clip, log1p: bool) -> np.ndarray:
    """clip, then sign-preserving log1p: the fitted statistics describe these values."""
    if clip is not None:
        low, high = clip
        values = np.clip(values, -np.inf if low is None else low, np.inf if high is None else high)
    if log1p:
        values = np.sign(values) * np.log1p(np.abs(values))
    return values


def numeric_floats(values: pa.Array) -> np.ndarray:
    """A numeric column as float64 (nulls as NaN); an integer beyond 2**53 becomes its nearest float (a safe cast
    would refuse it), in fitting and transforming alike."""
    return pc.cast(values, pa.float64(), safe=not pa.types.is_integer(values.type)).to_numpy(zero_copy_only=False)


def _numeric_values(feature: FittedNumeric, values: pa.Array) -> np.ndarray:
    try:
        floats = numeric_floats(values)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise UserError(f"feature '{feature.name}': column '{feature.source}' is {values.type}, not numeric") from None
    prepared = numeric_prepare(floats, feature.clip, feature.log1p)
    missing = np.isnan(prepared)
    if missing.any():
        if feature.fill is None:
            raise _missing(feature, values)
        prepared = np.where(missing, feature.fill, prepared)
    return prepared


def _numeric(feature: FittedNumeric, values: pa.Array) -> np.ndarray:
    prepared = _numeric_values(feature, values)
    if feature.boundaries is not None:
        return np.searchsorted(np.asarray(feature.boundaries), prepared, side="right").astype(np.int64)
    if feature.standardize:
        return ((prepared - feature.mean) / feature.std).astype(np.float32)
    return prepared.astype(np.float32)


def _categorical(feature: FittedCategorical, values: pa.Array) -> np.ndarray:
    if values.null_count and feature.default is None:
        raise _missing(feature, values)
    target = VALUE_TYPES[feature.value_type]
    try:
        values = values if values.type == target else pc.cast(values, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # values of another type: out of vocabulary
        missing = pc.is_null(values).to_numpy(zero_copy_only=False)
        return np.where(missing, feature.default_index, 0).astype(np.int64)
    index = pc.add(pc.index_in(values, value_set=pa.array(feature.vocabulary, target)), 1)
    if values.null_count:
        index = pc.if_else(pc.is_null(values), feature.default_index, index)
    return pc.fill_null(index, 0).to_numpy(zero_copy_only=False).astype(np.int64)


def _boolean(feature: FittedBoolean, values: pa.Array) -> np.ndarray:
    if values.null_count:
        if feature.default is None:
            raise _missing(feature, values)
        values = pc.fill_null(values, feature.default)
    try:
        return pc.cast(values, pa.bool_()).to_numpy(zero_copy_only=False).astype(np.float32)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise UserError(f"feature '{feature.name}': column '{feature.source}' is {values.type}, not boolean") from None


_PARTS = {"hour": (pc.hour, 0), "weekday": (pc.day_of_week, 0), "day": (pc.day, 1), "month": (pc.month, 1)}


def _timestamp(feature: FittedTimestamp, values: pa.Array) -> list[np.ndarray]:
    if values.null_count:
        raise _missing(feature, values)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        try:
            values = pc.cast(values, pa.timestamp("us", tz="UTC"))
        except pa.ArrowInvalid:
            raise UserError(f"feature '{feature.name}': column '{feature.source}' holds text that is not an "
                            "ISO 8601 timestamp") from None
    if pa.types.is_timestamp(values.type) and values.type.tz not in (None, "UTC", "+00:00"):
        values = pc.cast(values, pa.timestamp(values.type.unit, tz="UTC"))
    return [(part_fn(values).to_numpy(zero_copy_only=False) - offset).astype(np.int64)
            for part_fn, offset in (_PARTS[part] for part in feature.parts)]


def transform(batch: Any, fitted: FittedFeatures) -> dict[str, np.ndarray]:
    """Raw rows → {'numeric': float32 (rows × numeric_names), 'categorical': int64 (rows × categorical_names)}."""
    table = as_arrow(batch)
    numeric, categorical = [], []
    for feature in fitted.features:
        values = _column(table, feature)
        if isinstance(feature, FittedNumeric):
            (categorical if feature.boundaries is not None else numeric).append(_numeric(feature, values))
        elif isinstance(feature, FittedCategorical):
            categorical.append(_categorical(feature, values))
        elif isinstance(feature, FittedBoolean):
            numeric.append(_boolean(feature, values))
        else:
            categorical.extend(_timestamp(feature, values))
    rows = table.num_rows
    return {
        "numeric": np.column_stack(numeric).astype(np.float32, copy=False) if numeric
        else np.zeros((rows, 0), np.float32),
        "categorical": np.column_stack(categorical) if categorical else np.zeros((rows, 0), np.int64),
    }


def transform_batch(batch: pa.Table, fitted: FittedFeatures, keep: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """`transform` plus pass-through columns (label, id): the function Ray Data maps over tables."""
    out = transform(batch, fitted)
    for name in keep:
        out[name] = batch.column(name).to_numpy(zero_copy_only=False)
    return out


def transform_dataset(dataset, fitted: FittedFeatures, keep: tuple[str, ...] = (), **map_args):
    """A Ray Dataset of model inputs, through the very same `transform`."""
    return dataset.map_batches(transform_batch, fn_kwargs={"fitted": fitted, "keep": tuple(keep)},
                               batch_format="pyarrow", **map_args)
