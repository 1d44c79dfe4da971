"""Fitting the declared features: statistics learned in parallel with Ray Data, in one pass.

Each block reduces to a small partial: count, mean and M2 (merged with Chan's formula),
min/max, value counts, and, where quantiles are needed, a log-bucketed sketch (DDSketch's
idea: fixed buckets whose width is a set fraction of their value, so counts from any blocks
add up exactly and quantiles carry at most 0.25% relative error). The driver merges partials
in a fixed order and rounds the results, so the same data gives the same statistics, and thus
the same feature version, however Ray split it into blocks.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlray.blocks import reduce_blocks
from mlray.errors import UserError
from mlray.features.fitted import FittedBoolean, FittedCategorical, FittedFeatures, FittedNumeric, FittedTimestamp, Lineage
from mlray.features.transform import numeric_floats, numeric_prepare
from mlray.spec import CategoricalFeature, Feature, NumericFeature

log = logging.getLogger(__name__)
SKETCH_ACCURACY = 0.0025
SKETCH_GAMMA = (1 + SKETCH_ACCURACY) / (1 - SKETCH_ACCURACY)
SKETCH_ZERO = 1e-9  # magnitudes below this count as zero
SKETCH_OFFSET = 2**20  # keeps every non-zero bucket index positive before its sign is applied


def _rounded(value: float, digits: int = 12) -> float:
    return float(f"{value:.{digits}g}")


def _prepared(feature: NumericFeature, column: pa.Array) -> np.ndarray:
    floats = numeric_floats(column)
    prepared = numeric_prepare(floats, feature.clip, feature.log1p)
    return prepared[~np.isnan(prepared)]


def _value_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type):
        return "int"
    return "string"


def _needs_quantiles(feature: NumericFeature) -> bool:
    return feature.default == "median" or bool(feature.bucketize and feature.bucketize.quantiles)


# --------------------------------------------------------------------------- partials (run on Ray workers)


def sketch(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed log-bucket indices (0 = zero), ascending by the values they hold, and their counts."""
    magnitude = np.abs(values)
    exponent = np.ceil(np.log(np.maximum(magnitude, SKETCH_ZERO)) / np.log(SKETCH_GAMMA)).astype(np.int64)
    index = np.where(magnitude < SKETCH_ZERO, 0, exponent + SKETCH_OFFSET)
    return np.unique(np.where(values < 0, -index, index), return_counts=True)


def moments_partial(batch: pa.Table, features: list[Feature]) -> dict:
    """One block's statistics for every feature."""
    partial: dict[str, Any] = {"rows": batch.num_rows}
    for feature in features:
        column = batch.column(feature.source).combine_chunks()
        if isinstance(feature, NumericFeature):
            values = _prepared(feature, column)
            if len(values):
                mean = float(values.mean())
                partial[feature.name] = (len(values), mean, float(((values - mean) ** 2).sum()), float(values.min()),
                                         float(values.max()), sketch(values) if _needs_quantiles(feature) else None)
            else:
                partial[feature.name] = (0, 0.0, 0.0, None, None, None)
        elif isinstance(feature, CategoricalFeature):
            counts = pc.value_counts(column.drop_null())
            partial[feature.name] = (_value_type(column.type),
                                     dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))
        else:
            partial[feature.name] = len(column) - column.null_count
    return partial


def feature_reducer(features: list[Feature]) -> tuple:
    """The per-block reducer `fit` runs, for fusing into another pass over the same table."""
    return moments_partial, {"features": features}


# --------------------------------------------------------------------------- merging (driver)


def _merge_moments(parts: list[tuple]) -> tuple[int, float, float, float | None, float | None]:
    """Chan et al.'s parallel merge of (count, mean, M2) plus min and max."""
    count, mean, m2, low, high = 0, 0.0, 0.0, None, None
    for n, part_mean, part_m2, part_low, part_high, _ in parts:
        if not n:
            continue
        total = count + n
        delta = part_mean - mean
        mean += delta * n / total
        m2 += part_m2 + delta * delta * count * n / total
        count = total
        low = part_low if low is None else min(low, part_low)
        high = part_high if high is None else max(high, part_high)
    return count, mean, m2, low, high


def _merge_sketches(parts: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    sketches = [part[5] for part in parts if part[0]]
    merged, where = np.unique(np.concatenate([b for b, _ in sketches]), return_inverse=True)
    return merged, np.bincount(where, weights=np.concatenate([c for _, c in sketches])).astype(np.int64)


def _bucket_value(bucket: int) -> float:
    if bucket == 0:
        return 0.0
    value = 2 * SKETCH_GAMMA ** (abs(bucket) - SKETCH_OFFSET) / (SKETCH_GAMMA + 1)  # within 0.25% of every member
    return value if bucket > 0 else -value


def _quantile(merged: tuple[np.ndarray, np.ndarray], q: float) -> float:
    buckets, counts = merged  # ascending by value: np.unique sorts, and a negative index is a negative value
    cumulative = np.cumsum(counts)
    rank = int(np.floor(q * (cumulative[-1] - 1)))
    return _bucket_value(int(buckets[np.searchsorted(cumulative, rank + 1, side="left")]))


def _fit_numeric(feature: NumericFeature, parts: list[tuple]) -> FittedNumeric:
    count, mean, m2, _, _ = _merge_moments(parts)
    merged = _merge_sketches(parts) if _needs_quantiles(feature) else None
    std = float(np.sqrt(m2 / count)) if count else 0.0
    if std == 0.0:
        log.warning("feature %s is constant in the data; it is standardised with std 1", feature.name)
        std = 1.0
    boundaries = None
    if feature.bucketize is not None:
        if feature.bucketize.boundaries is not None:
            boundaries = list(feature.bucketize.boundaries)
        else:
            k = feature.bucketize.quantiles
            boundaries = sorted({_rounded(_quantile(merged, i / k), 8) for i in range(1, k)})
    fill = feature.default
    if fill == "mean":
        fill = mean
    elif fill == "median":
        fill = _quantile(merged, 0.5)
    elif fill is not None:
        fill = float(numeric_prepare(np.array([float(fill)]), feature.clip, feature.log1p)[0])
    return FittedNumeric(name=feature.name, source=feature.source, clip=feature.clip, log1p=feature.log1p,
                         standardize=feature.standardize, mean=_rounded(mean), std=_rounded(std),
                         boundaries=boundaries, fill=None if fill is None else _rounded(fill))


def _fit_categorical(feature: CategoricalFeature, parts: list[tuple]) -> FittedCategorical:
    value_type = parts[0][0] if parts else "string"
    counts: dict = {}
    for _, part in parts:
        for value, n in part.items():
            counts[value] = counts.get(value, 0) + n
    ranked = sorted((v for v, n in counts.items() if n >= feature.min_count), key=lambda v: (-counts[v], str(v)))
    vocabulary = ranked[: feature.top_k] if feature.top_k else ranked
    return FittedCategorical(name=feature.name, source=feature.source, value_type=value_type,
                             vocabulary=vocabulary, default=feature.default)


def _present(feature: Feature, parts: list) -> int:
    if isinstance(feature, NumericFeature):
        return sum(p[0] for p in parts)
    if isinstance(feature, CategoricalFeature):
        return sum(sum(counts.values()) for _, counts in parts)
    return sum(parts)


def fitted_from_partials(features: list[Feature], partials: list[dict], lineage: Lineage | None = None) -> FittedFeatures:
    """Merge the blocks' partials into the fitted feature set."""
    rows = sum(p["rows"] for p in partials)
    if rows == 0:
        raise UserError("cannot fit features on an empty table")
    fitted = []
    for feature in features:
        parts = [p[feature.name] for p in partials]
        if _present(feature, parts) == 0:
            raise UserError(f"feature '{feature.name}': column '{feature.source}' has no values (all {rows} are null)")
        if isinstance(feature, NumericFeature):
            fitted.append(_fit_numeric(feature, parts))
        elif isinstance(feature, CategoricalFeature):
            fitted.append(_fit_categorical(feature, parts))
        elif feature.kind == "boolean":
            fitted.append(FittedBoolean(name=feature.name, source=feature.source, default=feature.default))
        else:
            fitted.append(FittedTimestamp(name=feature.name, source=feature.source, parts=feature.parts))
    fitted_at = datetime.now(timezone.utc).isoformat()
    return FittedFeatures(features=fitted, lineage=(lineage or Lineage()).model_copy(
        update={"rows": rows, "fitted_at": fitted_at}))


def fit(data, features: list[Feature], lineage: Lineage | None = None) -> FittedFeatures:
    """Fit `features` on `data`: a Ray Dataset (distributed) or a pyarrow Table (in process)."""
    sources = list(dict.fromkeys(f.source for f in features))
    names = data.column_names if isinstance(data, pa.Table) else data.schema().names
    missing = [c for c in sources if c not in names]
    if missing:
        raise UserError(f"the data lacks columns the features read: {', '.join(missing)}")
    if not isinstance(data, pa.Table):
        data = data.select_columns(sources)
    partials = reduce_blocks(data, {"features": feature_reducer(features)})["features"]
    return fitted_from_partials(features, partials, lineage)
