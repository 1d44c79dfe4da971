"""Live quality per model version: the last labelled predictions of each, scored with the offline definitions.

Binary: precision, recall, ROC-AUC and calibration error; multiclass: accuracy and macro-F1; regression: MAE and
RMSE. A drop is measured against the champion's held-out test metric of the same name.
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


class LiveQuality:
    """A sliding window of the last `rows` labelled predictions of each version: (key, label, prediction JSON, score),
    the key being 'request_id:row' (a label that comes twice counts once)."""

    def __init__(self, rows: int, saved: dict[str, list] | None = None):
        self.rows = rows
        self.pairs: dict[str, deque] = {v: deque(map(tuple, items), maxlen=rows) for v, items in (saved or {}).items()}

    def add(self, version: str, key: str, label: str, prediction: str | None, score: float | None) -> bool:
        """Keep one labelled prediction; False when the call had failed or this key is already kept."""
        pairs = self.pairs.setdefault(version, deque(maxlen=self.rows))
        if prediction is None or any(p[0] == key for p in pairs):
            return False
        pairs.append((key, label, prediction, score))
        return True

    def to_state(self) -> dict[str, list]:
        return {v: [list(p) for p in pairs] for v, pairs in self.pairs.items()}

    def counts(self) -> dict[str, int]:
        return {v: len(p) for v, p in self.pairs.items()}

    def metrics(self, task: str, classes: list, threshold: float, min_labels: int) -> dict[str, dict[str, float]]:
        """Each version with at least `min_labels` labelled rows → its live metrics."""
        out = {}
        for version, pairs in self.pairs.items():
            if len(pairs) >= min_labels:
                found = task_quality(task, classes, threshold, [p[1:] for p in pairs])
                if found:
                    out[version] = found
        return out


def task_quality(task: str, classes: list, threshold: float, pairs: list[tuple]) -> dict[str, float]:
    """The task's live metrics over (label text, prediction JSON, score) triples; {} when none can be scored."""
    if task == "regression":
        truth = np.array([_number(label) for label, _, _ in pairs])
        predicted = np.array([_number(json.loads(p)) for _, p, _ in pairs])
        keep = ~(np.isnan(truth) | np.isnan(predicted))
        return regression_metrics(truth[keep], predicted[keep]) if keep.sum() >= 2 else {}
    if task == "binary":
        negative, positive = (str(c).lower() for c in classes)
        known = [(1 if label.lower() == positive else 0, score) for label, _, score in pairs
                 if label.lower() in (negative, positive) and score is not None]
        if len(known) < 2:
            return {}
        metrics = binary_metrics(np.array([t for t, _ in known]), np.array([s for _, s in known], float), threshold)
    else:
        metrics = predicted_label_metrics([label.lower() for label, _, _ in pairs],
                                          [str(json.loads(p)).lower() for _, p, _ in pairs])
    return {k: metrics[k] for k in REPORTED[task] if np.isfinite(metrics[k])}


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def quality_drop(live: dict[str, float], offline: dict[str, float], metric: str) -> float | None:
    """How far live quality fell below the offline test metric: a difference for scores where higher is better, a
    relative rise for errors; None when either side lacks the metric."""
    if metric not in live or metric not in offline or not np.isfinite(offline[metric]):
        return None
    if metric in LOWER_IS_BETTER:
        return (live[metric] - offline[metric]) / max(abs(offline[metric]), 1e-12)
    return offline[metric] - live[metric]
