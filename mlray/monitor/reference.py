"""What live traffic is compared with: a model version's packaged reference sample, encoded once.

Numeric and integer columns stay numbers (Kolmogorov–Smirnov); strings become indices through the fitted
vocabulary of their feature, with 0 for anything out of it, and booleans become false / true / missing (chi-squared).
The reference's scores are the version's own predictions on the sample, for the score-drift test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlray.calibration import Calibrator
from mlray.errors import UserError
from mlray.features import FittedFeatures
from mlray.registry.scores import scores
from mlray.spec import ProjectSpec

SKIPPED_TYPES = ("timestamp", "date")  # time always moves: a drift test on it would always fire
MAX_REFERENCE_CATEGORIES = 50  # a string column no feature fitted a vocabulary for keeps its most common values


@dataclass(frozen=True)
class ColumnEncoding:
    name: str
    kind: str  # 'numeric' or 'categorical'
    vocabulary: tuple = ()  # categorical: index i + 1; 0 is anything else
    fill: float = 0.0  # numeric: stands in for a missing value (the reference's median)

    def encode(self, values: pa.Array) -> np.ndarray:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if self.kind == "numeric":
            # unsafe: an int beyond 2**53 (a hostile request) is rounded, not an error that stops every window after it
            numbers = pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
            return np.where(np.isnan(numbers), self.fill, numbers)
        if pa.types.is_boolean(values.type):  # false 1, true 2, missing 0
            return pc.fill_null(pc.add(pc.cast(values, pa.int64()), 1), 0).to_numpy(zero_copy_only=False).astype(float)
        index = pc.index_in(pc.cast(values, pa.string()), value_set=pa.array([str(v) for v in self.vocabulary]))
        return pc.fill_null(pc.add(index, 1), 0).to_numpy(zero_copy_only=False).astype(float)


@dataclass
class Reference:
    """One model version's reference sample, encoded for the drift tests, with its own scores on it."""

    version: str
    task: str
    classes: list
    threshold: float
    encodings: list[ColumnEncoding]
    x_ref: np.ndarray  # rows × encodings
    scores: np.ndarray
    offline: dict[str, float]  # the version's held-out test metrics
    fitted: FittedFeatures
    sample: pa.Table = field(repr=False)  # the raw reference rows
    calibrator: Calibrator | None = None  # scores → probabilities (fitted on the validation split)
    confusion: np.ndarray | None = None  # [predicted][true] class counts on the validation split
    probabilities: np.ndarray | None = None  # multiclass: its class probabilities on the sample (rows × classes)

    @property
    def columns(self) -> list[str]:
        return [e.name for e in self.encodings]

    @property
    def categories_per_feature(self) -> dict[int, None]:
        """The categorical columns, for TabularDrift. Their categories are the ones the reference holds (a category
        neither side holds would make chi-squared divide by zero); a window's new ones join per test."""
        return {i: None for i, e in enumerate(self.encodings) if e.kind == "categorical"}

    def encode(self, inputs: pa.Table) -> np.ndarray:
        """Raw input rows (Arrow) as the matrix the detectors take."""
        return encode_columns(self.encodings, inputs)


def encode_columns(encodings: list[ColumnEncoding], inputs: pa.Table) -> np.ndarray:
    return np.column_stack([e.encode(inputs.column(e.name)) for e in encodings]).astype(np.float64)


def monitored_columns(spec: ProjectSpec) -> list[str]:
    """The input columns checked for drift: `monitor.columns`, else every feature's column but timestamps and dates."""
    if spec.monitor.columns:
        return list(spec.monitor.columns)
    table = spec.train_table
    sources = dict.fromkeys(f.source for f in spec.features)
    return [c for c in sources if table.columns[c].type not in SKIPPED_TYPES]


def column_encodings(spec: ProjectSpec, fitted: FittedFeatures, sample: pa.Table) -> list[ColumnEncoding]:
    vocabularies = {f.source: tuple(str(v) for v in f.vocabulary) for f in fitted.features if f.kind == "categorical"}
    out = []
    for column in monitored_columns(spec):
        kind = spec.train_table.columns[column].type
        values = sample.column(column)
        if kind in ("int", "float"):
            numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
            finite = numbers[~np.isnan(numbers)]
            out.append(ColumnEncoding(column, "numeric", fill=float(np.median(finite)) if len(finite) else 0.0))
        elif kind == "bool":
            out.append(ColumnEncoding(column, "categorical", vocabulary=("false", "true")))
        else:
            vocabulary = vocabularies.get(column) or _common_values(values)
            out.append(ColumnEncoding(column, "categorical", vocabulary=vocabulary))
    return out


def _common_values(values: pa.ChunkedArray) -> tuple:
    counts = pc.value_counts(pc.drop_null(pc.cast(values, pa.string())).combine_chunks())
    ranked = sorted(counts.to_pylist(), key=lambda c: (-c["counts"], c["values"]))
    return tuple(c["values"] for c in ranked[:MAX_REFERENCE_CATEGORIES])


def load_reference(spec: ProjectSpec, version: str) -> Reference:
    """The reference of a registered version: its package's sample, encoded, and its scores on it."""
    # heavy: MLflow and torch (the package's network); only loading a reference needs them, not the drift tests
    from mlray.registry.models import Registry
    from mlray.registry.package import load_package, predict_frame

    registry = Registry(spec)
    package = load_package(registry.uri(version), registry.client)
    frame = package.reference()
    if frame.empty:
        raise UserError(f"model '{spec.name}' v{version} has an empty reference sample: drift cannot be checked")
    sample = pa.Table.from_pandas(frame, preserve_index=False)
    missing = [c for c in monitored_columns(spec) if c not in sample.column_names]
    if missing:
        raise UserError(f"model '{spec.name}' v{version}: its reference sample lacks the monitored columns "
                        f"{', '.join(missing)} (retrain it with this spec, or set monitor.columns)")
    encodings = column_encodings(spec, package.fitted, sample)
    predicted = predict_frame(package.net, package.config, package.fitted, frame)
    reference_scores, config = scores(predicted), package.config
    probabilities = predicted[[f"probability_{c}" for c in config.classes]].to_numpy(float) \
        if config.task == "multiclass" else None
    return Reference(version, config.task, list(config.classes), config.threshold, encodings,
                     encode_columns(encodings, sample),
                     reference_scores, registry.test_metrics(version), package.fitted, sample,
                     Calibrator.from_dict(config.calibration) if config.calibration else None,
                     np.asarray(config.validation_confusion) if config.validation_confusion else None, probabilities)
