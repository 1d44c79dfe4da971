"""Quality and label shift of a window of served rows, estimated before its labels arrive.

Confidence-based performance estimation (CBPE, after NannyML): the model's calibrated probabilities are taken as the
truth about each row, i.e. labels ~ Bernoulli(probability) (multiclass: each row's categorical distribution),
independently. The point estimate of a metric is its value on the expected confusion counts (precision =
E[TP] / (E[TP] + E[FP]), ...; ROC-AUC: the expected count of correctly ordered positive-negative pairs over the
expected count of pairs). Its 90% interval is that of the *realised* metric under the same assumption: label vectors
drawn by Monte Carlo, each draw's metric computed at once (ROC-AUC by the rank-sum formula), 5th-95th percentile.
The assumption holds under covariate shift within the range the calibrator saw; when p(y|x) itself changes (concept
drift) the realised metric, once labels arrive, falls outside the interval: `outside_assumptions`. To test that on
labelled rows, `assumption_bands` widens each interval to a Monte-Carlo band, all m metrics' bands together of level
α (with a 90% band each over a quarter of calm windows would be flagged): the bands' common tail depth is the
deepest at which at most α of the draws leave any band (Westfall and Young's min-p over the draws themselves), never
shallower than Bonferroni's α / m. The five metrics move together (four of them read the same calls), so the joint
bands are narrower than Bonferroni's and find a concept drift sooner at the same false-alarm rate;
the metrics the labels give come from `realised_binary`, by the draws' own formulas. A multiclass window is checked
the same way on its four metrics (`multiclass_assumption_bands`, `realised_multiclass`). Empty divisions count 0, as
in `mlray.quality` (scikit-learn's zero_division=0); a ROC-AUC with one class only is NaN.

Black-box shift estimation (BBSE, Lipton, Wang and Smola 2018): under label shift (p(x|y) fixed, p(y) moving) the
window's predicted-class frequencies μ = C w, where C is the validation split's joint P(ŷ=i, y=j) and w_j the ratio
of target to source prior, so the target prior is w_j π_source(j), i.e. the solution q of P(ŷ=i | y=j) q = μ. It is
clipped to [0, 1] and renormalised. The 90% interval bootstraps both the window's predicted counts and the validation
confusion (multinomial resamples). A nearly singular confusion (a classifier close to chance) is solved by least
squares (pseudo-inverse): its resamples swing and the interval widens by itself; where it is singular outright, a
class on its null space is not identified at all and gets the interval [0, 1]. Nothing here raises on such data.
Against other rows rather than the validation split (the reference rows of a window's hours: seasonality),
`prior_difference` estimates both sides' priors with the same confusion and bootstraps their difference, the
confusion resampled once per draw for both sides (its error moves both alike), each side's counts on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

QUANTILES = (0.05, 0.95)
Z_90 = 1.6448536269514722  # the standard normal's 95th percentile: a two-sided 90% interval
SINGULAR = 1e-10  # singular values below this fraction of the largest count as zero
DRAW_BATCH = 500_000  # label cells drawn at once (4 MB as floats: faster than one large block, too)
CHECKED = ("accuracy", "precision", "recall", "f1", "roc_auc")  # the metrics that test CBPE's assumption
CHECKED_MULTICLASS = ("accuracy", "precision", "recall", "roc_auc")  # all a multiclass estimate has
FAMILY_ALPHA = 0.01  # a window that bears the assumption out is flagged at most this often, all CHECKED together
CHECK_DRAWS = 4000  # draws of the assumption bands: at least 2 m / FAMILY_ALPHA - 1 for m metrics
SHIFT_ALPHA = 0.002  # two-sided: a class share that has not moved from the matched rows' is flagged this often
SHIFT_DRAWS = 4000  # bootstrap draws of the matched prior difference: its 0.1% and 99.9% quantiles rest on 4 each


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval (90% unless said otherwise)."""

    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        slack = 1e-12 * max(1.0, abs(x))  # the same value computed two ways may differ in its last bit
        return self.low - slack <= x <= self.high + slack

    def to_dict(self) -> dict[str, float]:
        return {"value": float(self.value), "low": float(self.low), "high": float(self.high)}


# --- CBPE, binary -------------------------------------------------------------------------------------------------

def estimate_binary(probability: np.ndarray, score: np.ndarray, threshold: float, draws: int = 300,
                    seed: int = 0) -> dict[str, Estimate]:
    """Precision, recall, accuracy, F1, ROC-AUC and the confusion counts tp/fp/fn/tn of a window of calibrated
    P(y=1) per row, predicted positive where `score >= threshold` (ROC-AUC ranks by `score`)."""
    return _estimates(*_binary_draws(probability, score, threshold, draws, seed))


def _binary_draws(probability: np.ndarray, score: np.ndarray, threshold: float, draws: int,
                  seed: int) -> tuple[dict, dict]:
    """The metrics' point estimates, and their values on `draws` label vectors drawn from the probabilities (drawn
    DRAW_BATCH cells at a time, so that a long window does not hold every draw at once)."""
    probability, score = np.asarray(probability, float), np.asarray(score, float)
    predicted, rows = score >= threshold, len(probability)
    point = _binary_metrics(rows, predicted.sum(), probability[predicted].sum(), probability[~predicted].sum(),
                            _expected_auc(probability, score))
    rng, ranks, batch = np.random.default_rng(seed), rankdata(score), max(1, DRAW_BATCH // max(rows, 1))
    parts = [_label_metrics((rng.random((min(batch, draws - start), rows), np.float32) < probability).astype(float),
                            ranks, predicted) for start in range(0, draws, batch)]
    return point, {name: np.concatenate([part[name] for part in parts]) for name in point}


def realised_binary(labels: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """The metrics the true 0/1 labels give (`mlray.quality.binary_metrics`' definitions), computed as the draws'."""
    score = np.asarray(score, float)
    found = _label_metrics(np.asarray(labels, float)[None], rankdata(score), score >= threshold)
    return {name: float(np.asarray(value).ravel()[0]) for name, value in found.items()}


def _label_metrics(labels: np.ndarray, ranks: np.ndarray, predicted: np.ndarray) -> dict:
    """The metrics of each row of a (draws, rows) matrix of 0/1 labels, given the rows' score ranks and calls."""
    rows = labels.shape[1]
    positives, tp = labels.sum(axis=1), labels @ predicted.astype(float)
    return _binary_metrics(rows, predicted.sum(), tp, positives - tp, _rank_auc(labels @ ranks, positives, rows))


def _binary_metrics(rows: int, calls: int, tp, fn, roc_auc) -> dict:
    """The metrics of confusion counts (floats, or arrays of draws) given how many rows are predicted positive."""
    fp, tn = calls - tp, rows - calls - fn
    return {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "accuracy": _ratio(tp + tn, rows),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn), "roc_auc": roc_auc, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _expected_auc(probability: np.ndarray, score: np.ndarray) -> float:
    """E[correctly ordered positive-negative pairs] / E[pairs], ties counting half, a row never paired with itself."""
    order = np.argsort(score, kind="stable")
    p, ranked = probability[order], score[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    tied = np.add.reduceat(1 - p, starts) if len(p) else np.zeros(0)
    below = np.cumsum(tied) - tied  # expected negatives scored strictly lower than each group of tied scores
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(p)]))
    ordered = np.sum(p * (below[group] + 0.5 * (tied[group] - (1 - p))))
    pairs = p.sum() * (1 - p).sum() - np.sum(p * (1 - p))
    return float(ordered / pairs) if pairs > 0 else float("nan")


def _rank_auc(rank_sums: np.ndarray, positives: np.ndarray, rows: int) -> np.ndarray:
    """ROC-AUC per draw from the sum of the positives' ranks (Mann-Whitney); NaN where a draw has one class."""
    negatives = rows - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sums - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def _ratio(numerator, denominator):
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 0.0)


def _estimates(point: dict, drawn: dict) -> dict[str, Estimate]:
    """Each metric's point value with the 5th-95th percentile of its draws."""
    return {name: Estimate(float(value), *_interval(drawn[name])) for name, value in point.items()}


def _interval(values: np.ndarray) -> tuple[float, float]:
    """The 5th and 95th percentiles of the finite values; NaN when there are none."""
    finite = values[np.isfinite(values)]
    low, high = np.quantile(finite, QUANTILES) if len(finite) else (np.nan, np.nan)
    return float(low), float(high)


# --- CBPE, multiclass ---------------------------------------------------------------------------------------------

def estimate_multiclass(probabilities: np.ndarray, draws: int = 300, seed: int = 0,
                        scores: np.ndarray | None = None) -> dict[str, Estimate]:
    """Accuracy, macro precision (over the classes predicted), macro recall (over the classes present) and macro
    one-vs-rest ROC-AUC of a window of calibrated class probabilities (n, k). The model's calls are the argmax of its
    own `scores` (n, k: the uncalibrated probabilities it answered with, whose argmax a per-class calibration may
    not keep), which also rank the rows for ROC-AUC; default the probabilities."""
    return _estimates(*_multiclass_draws(probabilities, scores, draws, seed))


def _multiclass_draws(probabilities: np.ndarray, scores: np.ndarray | None, draws: int, seed: int) -> tuple[dict, dict]:
    """The multiclass metrics' point estimates, and their values on `draws` label vectors drawn from each row's
    categorical distribution (DRAW_BATCH cells at a time)."""
    probabilities = _rows_of_distributions(probabilities)
    scores = probabilities if scores is None else np.asarray(scores, float)
    rows, k = probabilities.shape
    calls, ranks = _calls_and_ranks(scores)
    upper = np.cumsum(probabilities, axis=1).astype(np.float32)
    upper[:, -1] = np.inf  # the last class takes what rounding leaves above the sum
    rng, batch = np.random.default_rng(seed), max(1, DRAW_BATCH // max(rows, 1))
    parts = [_class_metrics(_drawn_classes(rng.random((min(batch, draws - start), rows), np.float32), upper), calls,
                            ranks) for start in range(0, draws, batch)]
    expected_auc = np.array([_expected_auc(probabilities[:, c], scores[:, c]) for c in range(k)])
    point = _multiclass_metrics((probabilities * calls).sum(axis=0), probabilities.sum(axis=0), calls.sum(axis=0),
                                expected_auc, rows)
    return point, {name: np.concatenate([part[name] for part in parts]) for name in point}


def _drawn_classes(uniform: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Each draw's class of each row: how many of the row's cumulative probabilities its uniform lies at or above."""
    classes = np.zeros(uniform.shape, np.int32)
    for c in range(upper.shape[1] - 1):  # the last is infinite
        classes += uniform >= upper[:, c]
    return classes


def realised_multiclass(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """The metrics the true class indices give, computed as the draws' (`estimate_multiclass`' definitions)."""
    found = _class_metrics(np.asarray(labels, np.int64)[None], *_calls_and_ranks(np.asarray(scores, float)))
    return {name: float(np.asarray(value).ravel()[0]) for name, value in found.items()}


def _calls_and_ranks(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's call as a one-hot (n, k) mask (the argmax of its scores) and each class's score ranks (n, k)."""
    k = scores.shape[1]
    return scores.argmax(axis=1)[:, None] == np.arange(k), np.column_stack([rankdata(scores[:, c]) for c in range(k)])


def _class_metrics(classes: np.ndarray, calls: np.ndarray, ranks: np.ndarray) -> dict:
    """The multiclass metrics of each row of a (draws, rows) matrix of class indices, given the rows' calls and
    ranks."""
    rows, k = calls.shape
    tp, positives, auc = np.empty((k, len(classes))), np.empty((k, len(classes))), np.empty((k, len(classes)))
    for c in range(k):  # per draw: the class's labels, those the model called, their rank sum, in one product
        positives[c], tp[c], rank_sums = ((classes == c).astype(float) @ np.column_stack(
            [np.ones(rows), calls[:, c], ranks[:, c]])).T
        auc[c] = _rank_auc(rank_sums, positives[c], rows)
    return _multiclass_metrics(tp, positives, calls.sum(axis=0)[:, None], auc, rows)


def _multiclass_metrics(tp: np.ndarray, positives: np.ndarray, calls: np.ndarray, auc: np.ndarray, rows: int) -> dict:
    """Accuracy and macro metrics from per-class counts (class on the first axis; draws, if any, on the second). A
    class never predicted has no precision, a class absent no recall, and neither counts in the macro average."""
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(calls > 0, tp / calls, np.nan)
        recall = np.where(positives > 0, tp / positives, np.nan)
    return {"accuracy": _ratio(tp.sum(axis=0), rows), "precision": _nanmean(precision), "recall": _nanmean(recall),
            "roc_auc": _nanmean(auc)}


def _nanmean(values: np.ndarray) -> np.ndarray:
    """The mean over the first axis of the finite values, NaN where there are none (without numpy's warning)."""
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    return np.where(count > 0, np.where(finite, values, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)


def _rows_of_distributions(probabilities: np.ndarray) -> np.ndarray:
    """The (n, k) probabilities, each row renormalised; ValueError where a row is not a distribution to 1e-3."""
    probabilities = np.asarray(probabilities, float)
    sums = probabilities.sum(axis=1) if probabilities.ndim == 2 else None
    if sums is None or (probabilities < 0).any() or np.any(np.abs(sums - 1) > 1e-3):
        raise ValueError("estimate_multiclass wants an (n, k) array of class probabilities, each row summing to 1")
    return probabilities / sums[:, None]


# --- concept drift ------------------------------------------------------------------------------------------------

def outside_assumptions(estimates: dict[str, Estimate], realised: dict[str, float]) -> list[str]:
    """The metrics whose realised value (labels now in) falls outside the estimate's interval: the estimator's
    assumption, calibrated probabilities and p(y|x) unchanged, no longer holds."""
    return [name for name, estimate in estimates.items()
            if name in realised and np.isfinite(realised[name]) and np.isfinite([estimate.low, estimate.high]).all()
            and not estimate.contains(realised[name])]


def assumption_bands(probability: np.ndarray, score: np.ndarray, threshold: float, metrics: tuple[str, ...] = CHECKED,
                     alpha: float = FAMILY_ALPHA, draws: int = CHECK_DRAWS,
                     seed: int = 0) -> tuple[dict[str, Estimate], float]:
    """Each metric's CBPE point estimate with its band, and each band's level (the share of draws inside it): under
    CBPE's assumption a window has any of the metrics outside its band at most α of the time (see the module
    docstring). Compare with `realised_binary` through `outside_assumptions`."""
    return _joint_bands(*_binary_draws(probability, score, threshold, draws, seed), metrics, alpha)


def multiclass_assumption_bands(probabilities: np.ndarray, scores: np.ndarray,
                                metrics: tuple[str, ...] = CHECKED_MULTICLASS, alpha: float = FAMILY_ALPHA,
                                draws: int = CHECK_DRAWS, seed: int = 0) -> tuple[dict[str, Estimate], float]:
    """`assumption_bands` of a multiclass window: calibrated class probabilities (n, k) and the model's own scores
    (its calls and ranks). Compare with `realised_multiclass`."""
    return _joint_bands(*_multiclass_draws(probabilities, scores, draws, seed), metrics, alpha)


def _joint_bands(point: dict, drawn: dict, metrics: tuple[str, ...], alpha: float) -> tuple[dict[str, Estimate], float]:
    draws = len(drawn[metrics[0]])
    depth = joint_tail_depth([drawn[name] for name in metrics], alpha)
    bands = {name: Estimate(float(point[name]), *_band_at(drawn[name], depth)) for name in metrics}
    return bands, 1 - 2 * depth / (draws + 1) if depth else float("nan")


def joint_tail_depth(drawn: list[np.ndarray], alpha: float) -> int:
    """The deepest k at which, with a new draw counted in, at most α of the n + 1 lie outside the k-th smallest and
    k-th largest draws of any of the arrays (one per metric, aligned by draw): a draw is outside where at most k draws,
    itself included, lie at or beyond it in a tail. The new draw is exchangeable with the others, so a value that
    bears the assumption out is outside some band with probability at most α, all metrics together. Never shallower
    than Bonferroni's ⌊α/(2m) · (n + 1)⌋; NaN draws are never outside; 0 when there are too few draws for α."""
    n = len(drawn[0]) if drawn else 0
    depth = np.full(n, n, dtype=np.int64)  # each draw's shallowest tail depth over the metrics
    for values in drawn:
        finite = np.isfinite(values)
        ordered = np.sort(values[finite])
        below = np.searchsorted(ordered, values[finite], side="right")  # draws at or below, itself included
        above = len(ordered) - np.searchsorted(ordered, values[finite], side="left")
        depth[finite] = np.minimum(depth[finite], np.minimum(below, above))
    bonferroni = int(np.floor(alpha / (2 * max(len(drawn), 1)) * (n + 1)))
    allowed = int(np.floor(alpha * (n + 1))) - 1  # draws that may lie outside, besides the new one
    if allowed < 0:
        return bonferroni
    joint = int(np.sort(depth)[allowed]) - 1 if allowed < n else n  # `allowed` draws at most lie at depth ≤ joint
    return max(bonferroni, min(joint, n // 2))


def _band_at(values: np.ndarray, depth: int) -> tuple[float, float]:
    """The `depth`-th smallest and largest finite draws; NaN when depth is 0 or beyond the finite draws."""
    finite = np.sort(values[np.isfinite(values)])
    return (float(finite[depth - 1]), float(finite[-depth])) if 1 <= depth <= len(finite) else (float("nan"),
                                                                                               float("nan"))


# --- BBSE label shift ---------------------------------------------------------------------------------------------

def source_priors(validation_confusion: np.ndarray) -> list[Estimate]:
    """Each class's share of the validation rows (the confusion's column sums) with its 90% Wilson interval."""
    counts = np.asarray(validation_confusion, float).sum(axis=0)
    rows = counts.sum()
    if rows <= 0:
        return [Estimate(float("nan"), 0.0, 1.0) for _ in counts]
    share = counts / rows
    centre = (share + Z_90**2 / (2 * rows)) / (1 + Z_90**2 / rows)
    half = Z_90 / (1 + Z_90**2 / rows) * np.sqrt(share * (1 - share) / rows + Z_90**2 / (4 * rows**2))
    return [Estimate(float(s), float(max(c - h, 0.0)), float(min(c + h, 1.0))) for s, c, h in zip(share, centre, half)]


def estimate_priors(validation_confusion: np.ndarray, window_predicted: np.ndarray, draws: int = 300,
                    seed: int = 0) -> list[Estimate]:
    """The window's class priors by BBSE, from the validation confusion (rows: predicted class, columns: true class)
    and the window's count of rows predicted each class."""
    confusion, window = np.asarray(validation_confusion, float), np.asarray(window_predicted, float)
    k = len(window)
    if confusion.sum() <= 0 or window.sum() <= 0:
        return [Estimate(float("nan"), 0.0, 1.0) for _ in range(k)]
    point = _solve_priors(confusion[None], window[None])[0]
    rng = np.random.default_rng(seed)
    resampled = rng.multinomial(int(confusion.sum()), confusion.ravel() / confusion.sum(), size=draws).reshape(draws, k, k)
    boot = _solve_priors(resampled, rng.multinomial(int(window.sum()), window / window.sum(), size=draws))
    low, high = np.quantile(boot, QUANTILES, axis=0)
    free = _unidentified(confusion)
    return [Estimate(float(point[j]), 0.0 if free[j] else float(low[j]), 1.0 if free[j] else float(high[j]))
            for j in range(k)]


def _solve_priors(confusion: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Target priors q solving P(ŷ=i | y=j) q = μ for a stack of confusions (b, k, k) and window counts (b, k)."""
    return _priors(_inverse(confusion), window)


def _inverse(confusion: np.ndarray) -> np.ndarray:
    """The pseudo-inverses (least squares, minimum norm where singular) of P(ŷ=i | y=j) of a stack of confusions."""
    source = confusion.sum(axis=1, keepdims=True)
    given = confusion / np.where(source > 0, source, 1.0)  # a class absent from validation: a zero column
    return np.linalg.pinv(given, SINGULAR)


def _priors(inverse: np.ndarray, window: np.ndarray) -> np.ndarray:
    """q = P(ŷ | y)⁺ μ for a stack of inverses (b, k, k) and window counts (b, k), clipped to [0, 1], renormalised."""
    share = window / window.sum(axis=1, keepdims=True)
    priors = np.clip(np.einsum("bij,bj->bi", inverse, share), 0.0, 1.0)
    total = priors.sum(axis=1, keepdims=True)
    return np.where(total > 0, priors / np.where(total > 0, total, 1.0), 1.0 / priors.shape[1])


def _unidentified(confusion: np.ndarray) -> np.ndarray:
    """The classes the window's predictions cannot pin down: those on the null space of P(ŷ | y)."""
    source = confusion.sum(axis=0, keepdims=True)
    _, singular, rows = np.linalg.svd(confusion / np.where(source > 0, source, 1.0))
    null = rows[singular <= SINGULAR * max(singular.max(), 1e-300)]
    return np.abs(null).max(axis=0, initial=0.0) > 1e-8


def prior_shifted(source_prior: list[Estimate] | np.ndarray, target: list[Estimate]) -> list[int]:
    """The classes whose target prior interval lies wholly above or below the source prior's (an array of source
    priors counts as exact)."""
    if isinstance(source_prior, np.ndarray):
        source_prior = [Estimate(float(p), float(p), float(p)) for p in source_prior]
    return [j for j, (before, now) in enumerate(zip(source_prior, target)) if now.low > before.high or now.high < before.low]


def prior_difference(validation_confusion: np.ndarray, window_predicted: np.ndarray, source_predicted: np.ndarray,
                     alpha: float = SHIFT_ALPHA, draws: int = SHIFT_DRAWS, seed: int = 0) -> list[Estimate]:
    """Per class, the window's BBSE prior minus that of other rows (the reference rows of the window's hours), from
    both sides' counts of rows predicted each class, with the (α/2, 1 - α/2) bootstrap interval of the difference:
    each side's counts resampled on its own, the validation confusion once per draw for both (one classifier). A class
    on the confusion's null space gets [-1, 1]."""
    confusion = np.asarray(validation_confusion, float)
    window, source = np.asarray(window_predicted, float), np.asarray(source_predicted, float)
    k = len(window)
    if confusion.sum() <= 0 or window.sum() <= 0 or source.sum() <= 0:
        return [Estimate(float("nan"), -1.0, 1.0) for _ in range(k)]
    inverse = _inverse(confusion[None])
    point = (_priors(inverse, window[None]) - _priors(inverse, source[None]))[0]
    rng = np.random.default_rng(seed)
    resampled = rng.multinomial(int(confusion.sum()), confusion.ravel() / confusion.sum(), size=draws).reshape(draws, k, k)
    inverse = _inverse(resampled)
    boot = (_priors(inverse, rng.multinomial(int(window.sum()), window / window.sum(), size=draws))
            - _priors(inverse, rng.multinomial(int(source.sum()), source / source.sum(), size=draws)))
    low, high = np.quantile(boot, (alpha / 2, 1 - alpha / 2), axis=0)
    free = _unidentified(confusion)
    return [Estimate(float(point[j]), -1.0 if free[j] else float(low[j]), 1.0 if free[j] else float(high[j]))
            for j in range(k)]


def moved(differences: list[Estimate]) -> list[int]:
    """The classes whose prior difference's interval lies wholly above or below 0."""
    return [j for j, d in enumerate(differences) if d.low > 0 or d.high < 0]
