"""Drift and quality per segment: each value of each `train.slices` column, the window's rows of it against the
reference's rows of the same value, so a change confined to a few percent of the traffic is not drowned by the rest.

Per segment (a value with at least `min_rows` rows in both the window and the reference sample): every monitored
column's two-sample test (`column_tests`, as TabularDrift; the slice column itself is constant there and skipped),
the Kolmogorov–Smirnov test of the champion's scores, and for a binary model with a calibrator its CBPE estimates
(`estimators.estimate_binary`) with their drop below the same segment's estimate on the reference sample (reported,
not tested: the score test already sees the scores move). The tests of all segments of a window form one family:
Benjamini–Hochberg q-values over every segment × test, and a segment is flagged when one of its q-values is below
`q`. A value common in the window but rare in the reference cannot be compared: it is listed as `unseen` (its share
moving is the slice column's own chi-squared test, when that column is monitored).

Live quality per segment, once labels arrive (`live_segment_quality`): the realised ROC-AUC of each segment against
what CBPE expects of its own scores (`expected_roc_auc`: the calibrator taken as the truth, so covariate shift is
allowed for), or, where no expectation is given, against the slice column's other rows (valid only where segments
should score alike: a slice the model uses as a feature has its own ROC-AUC by design). The test is one-sided (doing
better is no alarm), a z-test on the logit scale with Hanley and McNeil's standard error (the null's, at the
expected value), which holds its level on the few dozen positives a segment has; q-values by Benjamini–Hochberg
across segments, a family of its own (labels come later, and far fewer). `check_segments` runs it on `labelled` rows
for a binary model with a calibrator and attaches each result to its segment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
from scipy.stats import false_discovery_control, norm, rankdata

from mlray.monitor.column_tests import column_p_values, ks_columns
from mlray.monitor.estimators import estimate_binary
from mlray.monitor.live import auc_error
from mlray.monitor.reference import Reference, encode_columns

SCORE_TEST = "score"
LIVE_TEST = "live_roc_auc"
ESTIMATED = ("roc_auc", "precision", "recall", "accuracy", "f1")
EDGE = 1e-6  # a ROC-AUC of 0 or 1 is held this far inside before its logit
MIN_CLASS_LABELS = 10  # live ROC-AUC of a segment: at least this many labels of each class


@dataclass
class LiveSegment:
    """The realised ROC-AUC of one segment's labelled rows against its baseline (`expected`, or the rest's)."""

    column: str
    value: str
    rows: int
    positives: int
    roc_auc: float
    roc_auc_se: float
    baseline: float
    baseline_kind: str  # 'expected' or 'rest'
    z: float
    p_value: float
    q_value: float = 1.0


@dataclass
class SegmentCheck:
    """One segment of a window: its tests (monitored columns, then the score test) and its estimated quality."""

    column: str
    value: str
    rows: int  # the window's rows of it
    reference_rows: int
    tests: list[str]
    p_values: list[float]
    distances: list[float]
    q_values: list[float] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)  # the tests whose q-value is below q (live: LIVE_TEST)
    estimated: dict[str, dict[str, float]] = field(default_factory=dict)  # metric → {value, low, high} (90%)
    reference_estimated: dict[str, float] = field(default_factory=dict)  # metric → estimate on the reference's rows
    estimated_drop: dict[str, float] = field(default_factory=dict)  # metric → drop beyond the interval (else 0)
    live: LiveSegment | None = None

    @property
    def evidence(self) -> float:
        """The smallest q-value of the segment, drift and live quality together (1 when nothing was tested)."""
        return min([*self.q_values, self.live.q_value if self.live else 1.0, 1.0])

    @property
    def flagged(self) -> bool:
        return bool(self.drifted)


@dataclass
class SegmentsResult:
    q: float
    slice_columns: list[str]
    segments: list[SegmentCheck]
    unseen: list[dict] = field(default_factory=list)  # {column, value, rows, reference_rows}: too rare in the reference
    missing: list[str] = field(default_factory=list)  # slice columns absent from the window or the reference sample

    @property
    def flagged(self) -> list[SegmentCheck]:
        return [s for s in self.segments if s.flagged]

    def worst(self, n: int = 5) -> list[SegmentCheck]:
        """The `n` segments with the strongest evidence of change: smallest q-value first, then smallest p-value."""
        def strength(s: SegmentCheck) -> tuple[float, float]:
            return s.evidence, min([*s.p_values, s.live.p_value if s.live else 1.0, 1.0])

        return sorted(self.segments, key=strength)[:n]

    def summary(self, n: int = 3) -> list[dict]:
        """The `n` worst segments in brief (JSON-able), for `mlray monitor status` and the drift report."""
        return [_finite({"column": s.column, "value": s.value, "rows": s.rows, "flagged": s.flagged,
                         "evidence": s.evidence, "drifted": s.drifted,
                         "estimated_roc_auc_drop": s.estimated_drop.get("roc_auc"),
                         "live_roc_auc": s.live.roc_auc if s.live else None,
                         "live_baseline": s.live.baseline if s.live else None}) for s in self.worst(n)]

    def to_dict(self) -> dict:
        """JSON-able (non-finite numbers become None); segments with their `flagged` and `evidence`."""
        segments = [asdict(s) | {"flagged": s.flagged, "evidence": s.evidence} for s in self.segments]
        return _finite({"q": self.q, "slice_columns": self.slice_columns, "segments": segments,
                        "flagged": [[s.column, s.value] for s in self.flagged], "unseen": self.unseen,
                        "missing": self.missing})


@dataclass(frozen=True)
class LabelledRows:
    """A window's labelled rows: their raw inputs (at least the slice columns), true labels 0/1 and the scores."""

    inputs: pa.Table
    truth: np.ndarray
    scores: np.ndarray


def labelled_rows(classes: list, rows: list[tuple[str, float | None, dict]]) -> LabelledRows | None:
    """(label text, score, slice values) rows as `LabelledRows`: those whose label names one of the binary model's
    classes (as text, case aside) and that have a score; None when none do."""
    negative, positive = (str(c).lower() for c in classes)
    kept = [(str(label).lower() == positive, float(score), values) for label, score, values in rows
            if str(label).lower() in (negative, positive) and score is not None and np.isfinite(score)]
    if not kept:
        return None
    return LabelledRows(pa.Table.from_pylist([values for _, _, values in kept]),
                        np.array([y for y, _, _ in kept], dtype=np.int64), np.array([s for _, s, _ in kept], float))


def check_segments(reference: Reference, window_inputs: pa.Table, window_scores: np.ndarray,
                   slice_columns: list[str], q: float = 0.05, min_rows: int = 100,
                   labelled: LabelledRows | None = None, seed: int = 0,
                   reference_rows: np.ndarray | None = None) -> SegmentsResult:
    """Every segment of the window against the same segment of `reference` (see the module docstring), or of its
    rows `reference_rows` (indices: those matched to the window's periods, so the hour is not taken for drift).
    `window_scores` are the champion's scores of `window_inputs`' rows, NaN where it gave none."""
    present = [c for c in slice_columns if c in window_inputs.column_names and c in reference.sample.column_names]
    result = SegmentsResult(q, list(slice_columns), [], missing=[c for c in slice_columns if c not in present])
    chosen = np.arange(reference.sample.num_rows) if reference_rows is None else np.asarray(reference_rows)
    x, x_ref, reference_scores = encode_columns(reference.encodings, window_inputs), reference.x_ref[chosen], \
        reference.scores[chosen]
    window_scores = np.asarray(window_scores, float)
    window_values = {c: segment_values(window_inputs.column(c)) for c in present}
    reference_values = {c: segment_values(reference.sample.column(c))[chosen] for c in present}
    for column in present:
        values, in_reference = window_values[column], reference_values[column]
        keep = [j for j, e in enumerate(reference.encodings) if e.name != column]
        kinds = [reference.encodings[j].kind for j in keep]
        for value in sorted({v for v in values.tolist() if v is not None}):
            inside, reference_inside = values == value, in_reference == value
            rows, reference_rows = int(inside.sum()), int(reference_inside.sum())
            if rows < min_rows:
                continue
            if reference_rows < min_rows:
                result.unseen.append({"column": column, "value": value, "rows": rows, "reference_rows": reference_rows})
                continue
            p_values, distances = column_p_values(kinds, x_ref[reference_inside][:, keep], x[inside][:, keep])
            segment = SegmentCheck(column, value, rows, reference_rows, [reference.encodings[j].name for j in keep],
                                   p_values.tolist(), distances.tolist())
            _score_test(segment, reference, reference_scores[reference_inside], window_scores[inside], min_rows, seed)
            result.segments.append(segment)
    _control(result.segments, q)
    if labelled is not None and reference.task == "binary" and reference.calibrator is not None:
        _live(result, reference, labelled, (window_values, reference_values), q, min_rows)
    return result


def segment_values(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A slice column's values as text (None for missing), keyed as the offline slice metrics key them."""
    return np.array([None if v is None else str(v) for v in column.to_pylist()], dtype=object)


def _score_test(segment: SegmentCheck, reference: Reference, reference_scores: np.ndarray, scores: np.ndarray,
                min_rows: int, seed: int) -> None:
    """The KS test of the segment's scores and its CBPE estimates, when it has at least `min_rows` scores."""
    scores, reference_scores = scores[np.isfinite(scores)], reference_scores[np.isfinite(reference_scores)]
    if len(scores) < min_rows or len(reference_scores) < min_rows:
        return
    p_value, distance = ks_columns(reference_scores[:, None], scores[:, None])
    segment.tests.append(SCORE_TEST)
    segment.p_values.append(float(p_value[0]))
    segment.distances.append(float(distance[0]))
    if reference.task != "binary" or reference.calibrator is None:
        return
    now = estimate_binary(reference.calibrator.apply(scores), scores, reference.threshold, seed=seed)
    before = estimate_binary(reference.calibrator.apply(reference_scores), reference_scores, reference.threshold,
                             draws=1, seed=seed)  # its point estimate only
    segment.estimated = {m: now[m].to_dict() for m in ESTIMATED}
    segment.reference_estimated = {m: before[m].value for m in ESTIMATED}
    segment.estimated_drop = {m: max(0.0, before[m].value - now[m].value) if now[m].high < before[m].value else 0.0
                              for m in ESTIMATED if np.isfinite([now[m].value, before[m].value]).all()}


def _control(segments: list[SegmentCheck], q: float) -> None:
    """Benjamini–Hochberg over every test of every segment: each segment's q-values and drifted tests."""
    p_values = np.array([p for s in segments for p in s.p_values], float)
    q_values = iter(false_discovery_control(p_values).tolist() if len(p_values) else [])
    for s in segments:
        s.q_values = [next(q_values) for _ in s.p_values]
        s.drifted = [t for t, found in zip(s.tests, s.q_values) if found < q]


def _live(result: SegmentsResult, reference: Reference, labelled: LabelledRows,
          values: tuple[dict[str, np.ndarray], dict[str, np.ndarray]], q: float, min_rows: int) -> None:
    """The live ROC-AUC test of each segment with labels, against the CBPE expectation of its own scores, attached
    to its segment (`values`: the slice columns' values in the window and in the reference, to count the rows of a
    segment the drift tests did not cover)."""
    window_values, reference_values = values
    columns = [c for c in window_values if c in labelled.inputs.column_names]
    slices = {c: segment_values(labelled.inputs.column(c)) for c in columns}
    truth, scores = np.asarray(labelled.truth, int), np.asarray(labelled.scores, float)
    expected = {(c, v): expected_roc_auc(reference, scores[rows == v])
                for c, rows in slices.items() for v in {v for v in rows.tolist() if v is not None}}
    by_key = {(s.column, s.value): s for s in result.segments}
    for found in live_segment_quality(truth, scores, slices, expected, q, min_rows):
        segment = by_key.get((found.column, found.value))
        if segment is None:  # labelled rows of a segment the window's drift tests did not cover
            segment = SegmentCheck(found.column, found.value, int((window_values[found.column] == found.value).sum()),
                                   int((reference_values[found.column] == found.value).sum()), [], [], [])
            result.segments.append(segment)
        segment.live = found
        segment.drifted += [LIVE_TEST] if found.q_value < q else []


def expected_roc_auc(reference: Reference, scores: np.ndarray) -> float:
    """The ROC-AUC CBPE expects of these scores (the reference's calibrator taken as the truth); NaN for none."""
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        return float("nan")
    return estimate_binary(reference.calibrator.apply(scores), scores, reference.threshold, draws=1)["roc_auc"].value


def live_segment_quality(truth: np.ndarray, scores: np.ndarray, slices: dict[str, np.ndarray],
                         expected: dict[tuple[str, str], float] | None = None, q: float = 0.05,
                         min_rows: int = 100, min_class_labels: int = MIN_CLASS_LABELS) -> list[LiveSegment]:
    """The live ROC-AUC test of every value of every slice column over labelled rows (`truth` 0/1, `scores`, and per
    column the rows' values): against `expected[(column, value)]` where given (its standard error at that value),
    else against the column's other rows (both standard errors); q-values by Benjamini–Hochberg over all of them."""
    truth, scores = np.asarray(truth, int), np.asarray(scores, float)
    scored = np.isfinite(scores)
    found = []
    for column, values in slices.items():
        values = np.asarray(values, dtype=object)
        for value in sorted({v for v in values[scored].tolist() if v is not None}):
            inside = scored & (values == value)
            test = _live_test(column, value, truth, scores, inside, scored & ~inside,
                              (expected or {}).get((column, value)), min_rows, min_class_labels)
            if test is not None:
                found.append(test)
    for test, q_value in zip(found, false_discovery_control([t.p_value for t in found]) if found else []):
        test.q_value = float(q_value)
    return found


def _live_test(column: str, value: str, truth: np.ndarray, scores: np.ndarray, inside: np.ndarray, rest: np.ndarray,
               expected: float | None, min_rows: int, min_class_labels: int) -> LiveSegment | None:
    positives, rows = int(truth[inside].sum()), int(inside.sum())
    if rows < min_rows or min(positives, rows - positives) < min_class_labels:
        return None
    auc = roc_auc(truth[inside], scores[inside])
    se = auc_error(auc, positives, rows - positives)
    if expected is not None and np.isfinite(expected):  # the null's standard error: at the expected value
        baseline, kind, spread = expected, "expected", _logit_error(expected, auc_error(expected, positives, rows - positives))
    else:
        rest_positives, rest_rows = int(truth[rest].sum()), int(rest.sum())
        if min(rest_positives, rest_rows - rest_positives) < min_class_labels:
            return None
        baseline, kind = roc_auc(truth[rest], scores[rest]), "rest"
        spread = float(np.hypot(_logit_error(auc, se),
                                _logit_error(baseline, auc_error(baseline, rest_positives, rest_rows - rest_positives))))
    z = (_logit(auc) - _logit(baseline)) / spread if spread > 0 else 0.0
    return LiveSegment(column, value, rows, positives, auc, se, baseline, kind, float(z), float(norm.cdf(z)))


def _logit(p: float) -> float:
    p = min(max(p, EDGE), 1 - EDGE)
    return float(np.log(p / (1 - p)))


def _logit_error(auc: float, se: float) -> float:
    """The standard error of logit(ROC-AUC) by the delta method, from that of the ROC-AUC."""
    auc = min(max(auc, EDGE), 1 - EDGE)
    return se / (auc * (1 - auc))


def roc_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC by the rank sum of the positives (ties counting half); NaN with one class only."""
    positives = int(truth.sum())
    negatives = len(truth) - positives
    if not positives or not negatives:
        return float("nan")
    return float((rankdata(scores)[truth == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _finite(value):
    """`value` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
