"""Live quality per model version: the last labelled predictions of each, scored with the offline definitions.

Binary: precision, recall, ROC-AUC and calibration error; multiclass: accuracy and macro-F1; regression: MAE and
RMSE. A drop is measured against the champion's held-out test metric of the same name, and counts only beyond twice
the live metric's standard error (ROC-AUC: Hanley and McNeil; rates: binomial), so a window of few labels, or of a
rare class, does not look like a fall in quality.
"""

from __future__ import annotations

import json
from collections import deque

import numpy as np

from mlray.quality import binary_metrics, predicted_label_metrics, regression_metrics
from mlray.spec.monitor import LOWER_IS_BETTER

DEFAULT_METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}
REPORTED = {"binary": ("precision", "recall", "roc_auc", "ece"), "multiclass": ("accuracy", "macro_f1"),
            "regression": ("mae", "rmse")}


ITEMS = 6  # a kept row: key, label, prediction, score, segments, probabilities
PROBABILITY_DIGITS = 6  # a kept class probability's decimals: the checkpoint holds every row's


def _without_trailing_nones(row: tuple) -> list:
    """A kept row as the checkpoint holds it: its first four items, then up to its last one that is not None."""
    items = list(row)
    while len(items) > 4 and items[-1] is None:
        items.pop()
    return items


class LiveQuality:
    """A sliding window of the last `rows` labelled predictions of each version: (key, label, prediction JSON, score,
    segments, probabilities), the key being 'request_id:row' (a label that comes twice counts once), segments the
    row's values of the slice columns ({column: text}, None when none were asked for or a checkpoint kept none) and
    probabilities a multiclass answer's class probabilities (None for other answers, or kept by an older mlray)."""

    def __init__(self, rows: int, saved: dict[str, list] | None = None):
        self.rows = rows
        # a checkpoint keeps a row's trailing Nones out (an older mlray's kept 4 or 5 items a row)
        self.pairs: dict[str, deque] = {v: deque(((*p, None, None)[:ITEMS] for p in items), maxlen=rows)
                                        for v, items in (saved or {}).items()}
        self.keys: dict[str, set] = {v: {p[0] for p in pairs} for v, pairs in self.pairs.items()}

    def add(self, version: str, key: str, label: str, prediction: str | None, score: float | None,
            segments: dict[str, str | None] | None = None, probabilities: list[float] | None = None) -> bool:
        """Keep one labelled prediction; False when the call had failed or this key is already kept."""
        pairs, keys = self.pairs.setdefault(version, deque(maxlen=self.rows)), self.keys.setdefault(version, set())
        if prediction is None or key in keys:
            return False
        if len(pairs) == self.rows:
            keys.discard(pairs[0][0])  # the oldest leaves the window
        kept = None if probabilities is None else [round(float(p), PROBABILITY_DIGITS) for p in probabilities]
        pairs.append((key, label, prediction, score, segments, kept))
        keys.add(key)
        return True

    def labelled(self, version: str) -> list[tuple[str, float | None]]:
        """(label text, served score) of `version`'s kept rows, oldest first."""
        return [(p[1], p[3]) for p in self.pairs.get(version, ())]

    def labelled_probabilities(self, version: str) -> list[tuple[str, list[float] | None]]:
        """(label text, served class probabilities) of `version`'s kept rows, oldest first."""
        return [(p[1], p[5]) for p in self.pairs.get(version, ())]

    def segmented(self, version: str) -> list[tuple[str, float | None, dict]]:
        """(label text, served score, slice values) of `version`'s kept rows that carry their slice values."""
        return [(p[1], p[3], p[4]) for p in self.pairs.get(version, ()) if p[4]]

    def to_state(self) -> dict[str, list]:
        return {v: [_without_trailing_nones(p) for p in pairs] for v, pairs in self.pairs.items()}

    def counts(self) -> dict[str, int]:
        return {v: len(p) for v, p in self.pairs.items()}

    def metrics(self, task: str, classes: list, threshold: float, min_labels: int,
                min_class_labels: int = 1) -> dict[str, dict[str, float]]:
        """Each version with at least `min_labels` labelled rows (binary: `min_class_labels` of each class) → its live
        metrics, each with its standard error (`<metric>_se`) where one is known."""
        out = {}
        for version, pairs in self.pairs.items():
            if len(pairs) >= min_labels:
                found = task_quality(task, classes, threshold, [p[1:4] for p in pairs], min_class_labels)
                if found:
                    out[version] = found
        return out


def task_quality(task: str, classes: list, threshold: float, pairs: list[tuple],
                 min_class_labels: int = 1) -> dict[str, float]:
    """The task's live metrics over (label text, prediction JSON, score) triples, with standard errors; {} when they
    cannot be scored (binary: fewer than `min_class_labels` labels of either class)."""
    if task == "regression":
        truth = np.array([_number(label) for label, _, _ in pairs])
        predicted = np.array([_number(json.loads(p)) for _, p, _ in pairs])
        keep = ~(np.isnan(truth) | np.isnan(predicted))
        return regression_metrics(truth[keep], predicted[keep]) if keep.sum() >= 2 else {}
    if task == "binary":
        negative, positive = (str(c).lower() for c in classes)
        known = [(1 if label.lower() == positive else 0, score) for label, _, score in pairs
                 if label.lower() in (negative, positive) and score is not None]
        truth = np.array([t for t, _ in known], dtype=int)
        if min(truth.sum(), len(truth) - truth.sum()) < max(min_class_labels, 1):
            return {}
        probability = np.array([s for _, s in known], float)
        metrics = binary_metrics(truth, probability, threshold)
        predicted = probability >= threshold
        counts = {"precision": predicted.sum(), "recall": truth.sum(), "accuracy": len(truth)}
    else:
        truth = [label.lower() for label, _, _ in pairs]
        metrics = predicted_label_metrics(truth, [str(json.loads(p)).lower() for _, p, _ in pairs])
        counts = {"accuracy": len(truth)}
    found = {k: metrics[k] for k in REPORTED[task] if np.isfinite(metrics[k])}
    errors = {f"{k}_se": rate_error(found[k], n) for k, n in counts.items() if k in found}
    if "roc_auc" in found:
        errors["roc_auc_se"] = auc_error(found["roc_auc"], int(truth.sum()), int(len(truth) - truth.sum()))
    return found | errors


def rate_error(rate: float, count: int) -> float:
    """The binomial standard error of a rate measured on `count` rows."""
    return float(np.sqrt(rate * (1 - rate) / max(count, 1)))


def auc_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's standard error of a ROC-AUC measured on so many positive and negative rows."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / max(
        positives * negatives, 1)
    return float(np.sqrt(max(variance, 0.0)))


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def quality_drop(live: dict[str, float], offline: dict[str, float], metric: str) -> float | None:
    """How far live quality fell below the offline test metric beyond its noise (twice the live standard error): a
    difference for scores where higher is better, a relative rise for errors; None when either side lacks it."""
    if metric not in live or metric not in offline or not np.isfinite(offline[metric]):
        return None
    noise = 2 * live.get(f"{metric}_se", 0.0)
    if metric in LOWER_IS_BETTER:
        return (live[metric] - noise - offline[metric]) / max(abs(offline[metric]), 1e-12)
    return offline[metric] - (live[metric] + noise)
