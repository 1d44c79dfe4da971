"""The drift tests against one reference, built once and reused for every window: Alibi Detect's by default, or the
same tests in plain SciPy (`monitor.detectors: scipy`, `mlray.monitor.scipy_detectors`).

- feature drift on the raw inputs: `TabularDrift` (Kolmogorov–Smirnov per numeric column, chi-squared per
  categorical one), corrected for testing many columns (Bonferroni or false discovery rate);
- prediction drift on the score distribution: `KSDrift`, at half of `monitor.p_value` (SCORE_SHARE): a window's
  verdict is drift when the scores drifted, or two columns did (both at once almost never by chance), or a class share
  moved (at 0.2%, `estimators.SHIFT_ALPHA`), so a calm window is called drifted at most about `p_value` of the time;
- optionally multivariate drift on the transformed numeric inputs: `MMDDrift` (torch backend). Alibi's permutation
  p-value leaves the observed statistic out of the permutations (alibi-detect issue 960): k of n permuted statistics at
  least as large give k/n, which is 0 when none is, and a test at level α rejects more often than α. `mmd_p_value`
  counts the observed one in: (k + 1) / (n + 1), the exact permutation p-value.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from mlray.features import transform
from mlray.monitor.context import Context, Matched, PeriodIndex, described, match_indexed
from mlray.monitor.reference import Reference
from mlray.monitor.scipy_detectors import ColumnDrift, ScoreDrift
from mlray.spec import MonitorSpec

log = logging.getLogger(__name__)
MAX_CODE = 1 << 20  # categorical codes above this are left to TabularDrift to list
SCORE_SHARE = 0.5  # of `monitor.p_value`: the score test's part of a window verdict's false-alarm budget


@dataclass
class DriftResult:
    columns: list[str]
    p_values: list[float]
    distances: list[float]
    drifted: list[str]  # the columns whose test fell below the corrected threshold
    threshold: float
    score_p_value: float | None = None
    score_distance: float | None = None
    score_drift: bool = False
    mmd_p_value: float | None = None
    mmd_distance: float | None = None
    mmd_drift: bool = False
    context: dict | None = None  # how the reference was matched to the window (`context.described`)
    judged: bool = True  # False: most rows fall in periods the reference never saw; nothing was tested
    # the reference's scores the window's scores were compared with (matched to its periods), for the class shares
    reference_scores: np.ndarray | None = field(default=None, repr=False)
    scored_rows: np.ndarray | None = field(default=None, repr=False)  # ... which scores took part (None: all)
    matched_rows: np.ndarray | None = field(default=None, repr=False)  # ... and which reference rows (None: all)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("reference_scores", "scored_rows", "matched_rows")}


@dataclass(frozen=True)
class ScoreTest:
    """The score test of a window: its verdict and the reference scores it compared with."""

    p_value: float | None
    distance: float | None
    drift: bool
    reference_scores: np.ndarray | None
    context: dict | None = None


@dataclass
class _WindowTests:
    tabular: Any  # TabularDrift
    x: np.ndarray  # the window's encoded rows it judges
    scorer: Any  # KSDrift
    scores: np.ndarray  # the window's scores it judges
    reference_scores: np.ndarray | None  # ... and the reference's it compares them with
    context: dict | None = None
    judged: bool = True
    scored_rows: np.ndarray | None = None  # a mask of the scores matched (None: all)
    matched_rows: np.ndarray | None = None  # the reference rows they are compared with (None: all)


class Detectors:
    """The drift tests of one reference; `check` runs them on one window. With a `context`, each window's tests are
    built on the reference rows of the window's periods (`mlray.monitor.context`); without, once."""

    def __init__(self, reference: Reference, monitor: MonitorSpec, seed: int = 0, context: Context | None = None):
        self.reference, self.monitor, self.seed = reference, monitor, seed
        self.context = context if context is not None and context.column in reference.sample.column_names else None
        if context is not None and self.context is None:
            log.warning("v%s's reference sample has no column %s: windows are compared with the whole reference",
                        reference.version, context.column)
        self.periods = PeriodIndex.of(self.context.periods(reference.sample.column(context.column))) \
            if self.context else None  # indexed once: each window is matched against it
        self.tabular, self.scores = self._tabular(reference.x_ref), self._scores(reference.scores)
        self.codes = category_codes(reference) if self.context else None  # to list a matched sample's categories
        self.mmd = self._mmd(seed) if monitor.multivariate else None

    def _tabular(self, x_ref: np.ndarray, categories: dict[int, list] | None = None):
        """TabularDrift on `x_ref`; `categories`: each categorical column's values in it, sorted (else it finds them)."""
        if self.monitor.detectors == "scipy":
            return ColumnDrift(x_ref, [e.kind for e in self.reference.encodings])
        from alibi_detect.cd import TabularDrift  # heavy: alibi-detect and torch (seconds); only building detectors

        return TabularDrift(x_ref, p_val=self.monitor.p_value,
                            categories_per_feature=categories or self.reference.categories_per_feature,
                            correction=self.monitor.correction)

    def _categories(self, rows: np.ndarray) -> dict[int, list] | None:
        """The values each categorical column holds in the reference rows `rows`, sorted, as TabularDrift's own
        `np.unique` finds them, counted on the codes read once (None: the codes are no small integers)."""
        if self.codes is None:
            return None
        dtype = self.reference.x_ref.dtype
        return {f: list(np.flatnonzero(np.bincount(codes[rows])).astype(dtype)) for f, codes in self.codes.items()}

    def _scores(self, scores: np.ndarray):
        if self.monitor.detectors == "scipy":
            return ScoreDrift(scores, self.monitor.p_value * SCORE_SHARE)
        from alibi_detect.cd import KSDrift  # heavy: alibi-detect (loaded once); only building detectors

        return KSDrift(scores.reshape(-1, 1), p_val=self.monitor.p_value * SCORE_SHARE)

    def _mmd(self, seed: int):
        from alibi_detect.cd import MMDDrift  # heavy: alibi-detect (already loaded by __init__); only the multivariate test

        numeric = self._numeric(self.reference.sample)
        rows = np.random.default_rng(seed).permutation(len(numeric))[: self.monitor.mmd_reference_rows]
        return MMDDrift(numeric[rows], backend="pytorch", p_val=self.monitor.p_value,
                        n_permutations=self.monitor.mmd_permutations, device="cpu")

    def _numeric(self, inputs: pa.Table) -> np.ndarray:
        """The transformed numeric inputs (the model's own transform), for the multivariate test."""
        return transform(inputs, self.reference.fitted)["numeric"].astype(np.float32)

    def check(self, inputs: pa.Table, scores: np.ndarray, scored: pa.Table | None = None) -> DriftResult:
        """Run every test on one window: `inputs` are its raw rows, `scores` the served scores (NaN-free) and `scored`
        the raw rows those scores answered (for their periods; default `inputs`)."""
        tests = self._tests(inputs, scores, inputs if scored is None else scored)
        if not tests.judged:  # nothing compared: no evidence either way (p-values of 1)
            columns = self.reference.columns
            return DriftResult(columns, [1.0] * len(columns), [0.0] * len(columns), [], self.monitor.p_value,
                               context=tests.context, judged=False)
        found = tests.tabular.predict(tests.x, drift_type="feature")["data"]
        p_values = np.asarray(found["p_val"], dtype=float)
        threshold = self._threshold(p_values)
        result = DriftResult(self.reference.columns, p_values.tolist(), np.asarray(found["distance"], float).tolist(),
                             [c for c, p in zip(self.reference.columns, p_values) if p < threshold], threshold,
                             context=tests.context)
        score = self._score(tests.scorer, tests.scores, tests.reference_scores)
        result.score_p_value, result.score_distance, result.score_drift = score.p_value, score.distance, score.drift
        result.reference_scores, result.scored_rows = score.reference_scores, tests.scored_rows
        result.matched_rows = tests.matched_rows
        if self.mmd is not None:  # against the whole reference: MMD is not matched to the window's periods
            mmd = self.mmd.predict(self._numeric(inputs))["data"]
            result.mmd_p_value = permutation_p_value(float(mmd["p_val"]), self.monitor.mmd_permutations)
            result.mmd_distance = float(mmd["distance"])
            result.mmd_drift = result.mmd_p_value < self.monitor.p_value
        return result

    def check_scores(self, scores: np.ndarray, scored: pa.Table) -> ScoreTest:
        """The score test alone, on the scores a version answered for the raw rows `scored` (a challenger's or a
        shadow's, against its own reference)."""
        if self.context is None:
            return self._score(self.scores, scores, self.reference.scores)
        matched = self._match(scored)
        context = described(self.context, matched)
        if not matched.judged:
            return ScoreTest(None, None, False, None, context)
        reference_scores = self.reference.scores[matched.reference_rows]
        found = self._score(self._scores(reference_scores), scores[matched.window_rows], reference_scores)
        return ScoreTest(found.p_value, found.distance, found.drift, found.reference_scores, context)

    @staticmethod
    def _score(scorer, scores: np.ndarray, reference_scores: np.ndarray | None) -> ScoreTest:
        if scorer is None or len(scores) < 2:
            return ScoreTest(None, None, False, reference_scores)
        found = scorer.predict(scores.reshape(-1, 1))["data"]
        return ScoreTest(float(np.asarray(found["p_val"]).ravel()[0]), float(np.asarray(found["distance"]).ravel()[0]),
                         bool(found["is_drift"]), reference_scores)

    def _tests(self, inputs: pa.Table, scores: np.ndarray, scored: pa.Table) -> _WindowTests:
        """The detectors and the rows of this window they judge: without a context, the ones built once on the whole
        reference; with one, new ones on the reference rows of the window's periods (the score test matched on the
        rows that were scored)."""
        x = self.reference.encode(inputs)
        if self.context is None:
            return _WindowTests(self.tabular, x, self.scores, scores, self.reference.scores)
        rows = self._match(inputs)
        scored_rows = rows if scored is inputs else self._match(scored)  # the same rows match the same way
        context = described(self.context, rows)
        if not rows.judged:
            return _WindowTests(None, x, None, scores[:0], None, context, judged=False)
        tabular = self._tabular(self.reference.x_ref[rows.reference_rows], self._categories(rows.reference_rows))
        if not scored_rows.judged:
            return _WindowTests(tabular, kept(x, rows.window_rows), None, scores[:0], None, context)
        reference_scores = self.reference.scores[scored_rows.reference_rows]
        return _WindowTests(tabular, kept(x, rows.window_rows), self._scores(reference_scores),
                            kept(scores, scored_rows.window_rows), reference_scores, context,
                            scored_rows=scored_rows.window_rows, matched_rows=scored_rows.reference_rows)

    def _match(self, rows: pa.Table) -> Matched:
        return match_indexed(self.periods, self.context.periods(rows.column(self.context.column)), self.seed)

    def _threshold(self, p_values: np.ndarray) -> float:
        """The per-column threshold after the correction (a column below it drifted)."""
        n, alpha = len(p_values), self.monitor.p_value
        if self.monitor.correction == "bonferroni" or n == 1:
            return alpha / n
        return fdr_threshold(p_values, alpha)


def fdr_threshold(p_values: np.ndarray, q: float) -> float:
    """Benjamini–Hochberg's threshold over `p_values` at false discovery rate `q`, as Alibi's `fdr` finds it: q · i / n
    for the largest i whose i-th smallest p-value lies below it; q / n (Bonferroni's) when none does. Here rather
    than Alibi's so that `detectors: scipy` needs no alibi-detect."""
    ordered, n = np.sort(np.asarray(p_values, float)), len(p_values)
    cuts = q * np.arange(1, n + 1) / n
    below = np.flatnonzero(ordered < cuts)
    return float(cuts[below[-1]]) if len(below) else q / n


def kept(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`values[mask]`, without copying them when the mask keeps every row (a window of hours the reference all saw)."""
    return values if mask.all() else values[mask]


def category_codes(reference: Reference) -> dict[int, np.ndarray] | None:
    """Each categorical column of the reference as integer codes (their encoding: 0 for anything else, i + 1 for the
    i-th value), or None when one holds anything but small non-negative integers."""
    codes = {}
    for f in reference.categories_per_feature:
        column = reference.x_ref[:, f]
        if not len(column) or column.min() < 0 or column.max() > MAX_CODE or np.any(column != np.floor(column)):
            return None
        codes[f] = column.astype(np.int64)
    return codes


def permutation_p_value(alibi_p_value: float, permutations: int) -> float:
    """Alibi's k/n permutation p-value with the observed statistic counted in: (k + 1) / (n + 1) (alibi-detect
    issue 960)."""
    exceeded = round(alibi_p_value * permutations)
    return (exceeded + 1) / (permutations + 1)
