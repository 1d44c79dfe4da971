"""Fitting the declared features: statistics learned in parallel with Ray Data.

Each block reduces to a small partial (counts, means, M2, min/max, value counts; then
fixed-bin histograms where quantiles are needed); the driver merges partials in a fixed
order and rounds the results, so the same data gives the same statistics, and thus the same
feature version, however Ray split it into blocks.
"""

from __future__ import annotations

import logging
import pickle
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlray.errors import UserError
from mlray.features.fitted import (FittedBoolean, FittedCategorical, FittedFeatures, FittedNumeric,
                                   FittedTimestamp, Lineage)
from mlray.features.transform import numeric_prepare
from mlray.spec import CategoricalFeature, Feature, NumericFeature

log = logging.getLogger(__name__)
HISTOGRAM_BINS = 8192


def _rounded(value: float, digits: int = 12) -> float:
    return float(f"{value:.{digits}g}")


def _prepared(feature: NumericFeature, column: pa.Array) -> np.ndarray:
    floats = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    prepared = numeric_prepare(floats, feature.clip, feature.log1p)
    return prepared[~np.isnan(prepared)]


def _value_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type):
        return "int"
    return "string"


# --------------------------------------------------------------------------- partials (run on Ray workers)


def moments_partial(batch: pa.Table, features: list[Feature]) -> dict:
    partial: dict[str, Any] = {"rows": batch.num_rows}
    for feature in features:
        column = batch.column(feature.source).combine_chunks()
        if isinstance(feature, NumericFeature):
            values = _prepared(feature, column)
            partial[feature.name] = (len(values), float(values.mean()) if len(values) else 0.0,
                                     float(((values - values.mean()) ** 2).sum()) if len(values) else 0.0,
                                     float(values.min()) if len(values) else None,
                                     float(values.max()) if len(values) else None)
        elif isinstance(feature, CategoricalFeature):
            counts = pc.value_counts(column.drop_null())
            partial[feature.name] = (_value_type(column.type),
                                     dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))
        else:
            partial[feature.name] = len(column) - column.null_count
    return partial


def histogram_partial(batch: pa.Table, features: list[NumericFeature], ranges: dict[str, tuple]) -> dict:
    partial = {}
    for feature in features:
        low, high = ranges[feature.name]
        values = _prepared(feature, batch.column(feature.source).combine_chunks())
        partial[feature.name] = np.histogram(values, bins=HISTOGRAM_BINS, range=(low, high if high > low else low + 1))[0]
    return partial


def _pickled(fn: Callable[..., dict]) -> Callable[..., pa.Table]:
    def run(batch: pa.Table, **kwargs) -> pa.Table:
        return pa.table({"partial": pa.array([pickle.dumps(fn(batch, **kwargs))], pa.binary())})

    run.__name__ = fn.__name__
    return run


def _partials(data, fn: Callable[..., dict], **kwargs) -> list[dict]:
    """Run `fn` over every block of a Ray Dataset (or over one in-memory table), in a fixed order."""
    if isinstance(data, pa.Table):
        return [fn(data, **kwargs)]
    rows = data.map_batches(_pickled(fn), fn_kwargs=kwargs, batch_format="pyarrow", batch_size=None).iter_rows()
    return [pickle.loads(blob) for blob in sorted(row["partial"] for row in rows)]


# --------------------------------------------------------------------------- merging (driver)


def _merge_moments(parts: list[tuple]) -> tuple[int, float, float, float | None, float | None]:
    """Chan et al.'s parallel merge of (count, mean, M2) plus min and max."""
    count, mean, m2, low, high = 0, 0.0, 0.0, None, None
    for n, part_mean, part_m2, part_low, part_high in parts:
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


def _quantile(histogram: np.ndarray, low: float, high: float, q: float) -> float:
    cumulative = np.cumsum(histogram)
    target = q * cumulative[-1]
    index = int(np.searchsorted(cumulative, target, side="left"))
    below = cumulative[index - 1] if index else 0
    width = (high - low) / len(histogram)
    inside = (target - below) / histogram[index] if histogram[index] else 0.0
    return low + (index + inside) * width


def _fit_numeric(feature: NumericFeature, moments: tuple, histogram: np.ndarray | None) -> FittedNumeric:
    count, mean, m2, low, high = moments
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
            cuts = [_rounded(_quantile(histogram, low, high, i / k), 8) for i in range(1, k)]
            boundaries = sorted(set(cuts))
    fill = feature.default
    if fill == "mean":
        fill = mean
    elif fill == "median":
        fill = _quantile(histogram, low, high, 0.5)
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


def fit(data, features: list[Feature], lineage: Lineage | None = None) -> FittedFeatures:
    """Fit `features` on `data`: a Ray Dataset (distributed) or a pyarrow Table (in process)."""
    sources = list(dict.fromkeys(f.source for f in features))
    if not isinstance(data, pa.Table):
        data = data.select_columns(sources)
    missing = [c for c in sources if c not in _schema_names(data)]
    if missing:
        raise UserError(f"the data lacks columns the features read: {', '.join(missing)}")
    partials = _partials(data, moments_partial, features=features)
    rows = sum(p["rows"] for p in partials)
    if rows == 0:
        raise UserError("cannot fit features on an empty table")
    for feature in features:
        present = _present(feature, [p[feature.name] for p in partials])
        if present == 0:
            raise UserError(f"feature '{feature.name}': column '{feature.source}' has no values (all {rows} are null)")

    numeric = [f for f in features if isinstance(f, NumericFeature)]
    moments = {f.name: _merge_moments([p[f.name] for p in partials]) for f in numeric}
    need_histogram = [f for f in numeric if f.default == "median" or (f.bucketize and f.bucketize.quantiles)]
    histograms: dict[str, np.ndarray] = {}
    if need_histogram:
        ranges = {f.name: moments[f.name][3:] for f in need_histogram}
        for part in _partials(data, histogram_partial, features=need_histogram, ranges=ranges):
            for name, counts in part.items():
                histograms[name] = histograms.get(name, 0) + counts

    fitted = []
    for feature in features:
        if isinstance(feature, NumericFeature):
            fitted.append(_fit_numeric(feature, moments[feature.name], histograms.get(feature.name)))
        elif isinstance(feature, CategoricalFeature):
            fitted.append(_fit_categorical(feature, [p[feature.name] for p in partials]))
        elif feature.kind == "boolean":
            fitted.append(FittedBoolean(name=feature.name, source=feature.source, default=feature.default))
        else:
            fitted.append(FittedTimestamp(name=feature.name, source=feature.source, parts=feature.parts))
    stamp = (lineage or Lineage()).model_copy(update={"rows": rows, "fitted_at": datetime.now(timezone.utc).isoformat()})
    return FittedFeatures(features=fitted, lineage=stamp)


def _schema_names(data) -> list[str]:
    return data.column_names if isinstance(data, pa.Table) else data.schema().names


def _present(feature: Feature, parts: list) -> int:
    if isinstance(feature, NumericFeature):
        return sum(p[0] for p in parts)
    if isinstance(feature, CategoricalFeature):
        return sum(sum(counts.values()) for _, counts in parts)
    return sum(parts)
