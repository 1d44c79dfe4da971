"""Model quality metrics, defined once: held-out evaluation per task and per slice (the bias check), and the live
quality a rollout compares on labelled feedback. scikit-learn's definitions throughout."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

MIN_SLICE_ROWS = 20


def expected_calibration_error(y_true: np.ndarray, probability: np.ndarray, bins: int = 10) -> float:
    """Mean gap between predicted probability and observed frequency, weighted by bin size."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap += inside.mean() * abs(probability[inside].mean() - y_true[inside].mean())
    return float(gap)


def binary_metrics(y_true: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = probability >= threshold
    both = len(np.unique(y_true)) == 2
    return {
        "roc_auc": float(skm.roc_auc_score(y_true, probability)) if both else float("nan"),
        "pr_auc": float(skm.average_precision_score(y_true, probability)) if both else float("nan"),
        "precision": float(skm.precision_score(y_true, predicted, zero_division=0)),
        "recall": float(skm.recall_score(y_true, predicted, zero_division=0)),
        "f1": float(skm.f1_score(y_true, predicted, zero_division=0)),
        "accuracy": float(skm.accuracy_score(y_true, predicted)),
        "ece": expected_calibration_error(y_true, probability),
        "positive_rate": float(y_true.mean()),
    }


def multiclass_metrics(y_true: np.ndarray, probabilities: np.ndarray, classes: list) -> dict[str, float]:
    predicted = probabilities.argmax(axis=1)
    labels = list(range(len(classes)))
    recall = skm.recall_score(y_true, predicted, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": float(skm.accuracy_score(y_true, predicted)),
        "macro_f1": float(skm.f1_score(y_true, predicted, labels=labels, average="macro", zero_division=0)),
        **{f"recall_{cls}": float(r) for cls, r in zip(classes, recall)},
    }


def regression_metrics(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y_true, predicted))),
        "mae": float(skm.mean_absolute_error(y_true, predicted)),
        "r2": float(skm.r2_score(y_true, predicted)) if len(y_true) > 1 else float("nan"),
    }


def label_metrics(truth: list, predicted: list, precision_over: set | None = None,
                  recall_over: set | None = None) -> dict[str, float]:
    """Quality of predicted labels against true ones (live feedback compares labels, not scores): accuracy, macro
    precision over `precision_over` (default: the classes predicted) and macro recall over `recall_over` (default:
    the classes seen). A class never predicted has no precision: its misses count once, in recall. NaN where no
    class is left to average over."""
    precision_over = set(predicted) if precision_over is None else precision_over
    recall_over = set(truth) if recall_over is None else recall_over
    return {"accuracy": float(skm.accuracy_score(truth, predicted)),
            "precision": _macro(skm.precision_score, truth, predicted, precision_over),
            "recall": _macro(skm.recall_score, truth, predicted, recall_over)}


def _macro(score, truth: list, predicted: list, classes: set) -> float:
    if not classes:
        return float("nan")
    return float(score(truth, predicted, labels=sorted(classes, key=str), average="macro", zero_division=np.nan))


def predicted_label_metrics(truth: list, predicted: list) -> dict[str, float]:
    """Accuracy and macro-F1 of predicted labels (live multiclass quality: the log keeps labels, not every
    class's probability)."""
    classes = sorted(set(truth) | set(predicted), key=str)
    return {"accuracy": float(skm.accuracy_score(truth, predicted)),
            "macro_f1": float(skm.f1_score(truth, predicted, labels=classes, average="macro", zero_division=0))}


def task_metrics(task: str, y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5,
                 classes: list | None = None) -> dict[str, float]:
    if task == "binary":
        return binary_metrics(y_true, scores, threshold)
    if task == "multiclass":
        return multiclass_metrics(y_true, scores, classes or [])
    return regression_metrics(y_true, scores)


def slice_metrics(task: str, y_true: np.ndarray, scores: np.ndarray, slices: dict[str, np.ndarray],
                  threshold: float = 0.5, classes: list | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics for every value of every slice column with at least MIN_SLICE_ROWS rows."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for column, values in slices.items():
        out[column] = {}
        for value in sorted({v for v in values.tolist() if v is not None}, key=str):
            inside = values == value
            if inside.sum() >= MIN_SLICE_ROWS:
                out[column][str(value)] = {"rows": int(inside.sum()),
                                           **task_metrics(task, y_true[inside], scores[inside], threshold, classes)}
    return out
