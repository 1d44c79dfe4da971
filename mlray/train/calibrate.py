"""What the validation split decides for a classifier, after training and before packaging: the binary decision
threshold (`train.threshold`: F1-best, a precision or recall target, or a fixed number), the calibrator that turns
scores into probabilities (for estimating quality before labels arrive), and the confusion matrix of predicted
against true classes (for estimating label shift). All of it goes into the package's config."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from mlray.calibration import choose_threshold, fit_calibrator
from mlray.spec import TrainSpec
from mlray.train.data import LabelEncoding
from mlray.train.evaluate import score

log = logging.getLogger(__name__)


@dataclass
class ValidationFit:
    threshold: float  # binary: the decision threshold the package uses (0.5 otherwise, unused)
    calibration: dict | None = None  # `Calibrator.to_dict()`; None: a regression, or no labelled validation rows
    confusion: list[list[int]] | None = None  # [predicted class][true class] counts on the validation split
    metrics: dict[str, float] = field(default_factory=dict)  # what the threshold achieved, and the calibration error


def fit_on_validation(train: TrainSpec, labels: LabelEncoding, predicted: pd.DataFrame,
                      validation: pd.DataFrame) -> ValidationFit:
    """The threshold, calibrator and confusion matrix of a trained classifier, from its predictions on the
    validation split's raw rows."""
    rule = train.threshold_rule()
    fixed = rule if isinstance(rule, float) else 0.5
    if labels.task == "regression" or validation.empty:
        return ValidationFit(fixed)
    y_true = labels.encode(pa.array(validation[labels.column]))
    labelled = y_true >= 0
    y_true, scores = y_true[labelled], score(predicted, labels.task, labels.classes)[labelled]
    if len(y_true) == 0:
        return ValidationFit(fixed)
    calibrator = fit_calibrator(labels.task, y_true, scores, seed=train.seed)
    metrics = {"validation_ece": calibrator.ece_before, "validation_ece_calibrated": calibrator.ece_after}
    if labels.task == "binary":
        chosen = choose_threshold(y_true, scores, rule) if not isinstance(rule, float) else None
        threshold = chosen.value if chosen else fixed
        metrics |= {f"validation_{k}_at_threshold": v for k, v in (chosen.achieved if chosen else {}).items()}
        predicted_class = (scores >= threshold).astype(np.int64)
    else:
        threshold, predicted_class = fixed, scores.argmax(axis=1)
    k = len(labels.classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (predicted_class, y_true), 1)
    log.info("validation split: threshold %.4f (%s), calibration %s (ECE %.4f → %.4f)", threshold, rule,
             calibrator.method, calibrator.ece_before, calibrator.ece_after)
    return ValidationFit(float(threshold), calibrator.to_dict(), confusion.tolist(), metrics | {"threshold": threshold})
