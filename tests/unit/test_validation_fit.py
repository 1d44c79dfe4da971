"""What training takes from the validation split before packaging: the threshold the spec's rule picks, the
calibrator and the confusion matrix (no Ray, no MLflow: the predictions as a frame, as `predict_frame` makes them)."""

import numpy as np
import pandas as pd
import pytest

from mlray.errors import UserError
from mlray.spec import ThresholdTarget, TrainSpec
from mlray.train.calibrate import fit_on_validation
from mlray.train.data import LabelEncoding

LABELS = LabelEncoding("is_fraud", "binary", [False, True])


def validation(rows: int = 4000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, raw rows) of a classifier on a split with 5% positives, a few rows unlabelled."""
    rng = np.random.default_rng(seed)
    y = rng.random(rows) < 0.05
    score = 1 / (1 + np.exp(-(rng.normal(np.where(y, 2.5, 0.0), 1.0) - 3.0)))
    label = pd.array(y, dtype="boolean")
    label[:10] = pd.NA
    return pd.DataFrame({"score": score}), pd.DataFrame({"is_fraud": label})


def test_auto_picks_the_f1_best_threshold_and_the_package_gets_calibrator_and_confusion():
    predicted, rows = validation()
    fit = fit_on_validation(TrainSpec(), LABELS, predicted, rows)
    assert 0.05 < fit.threshold < 0.5  # rare positives scored low: the best F1 lies well below 0.5
    assert fit.calibration["method"] in ("platt", "isotonic") and fit.metrics["validation_ece_calibrated"] < 0.02
    assert np.sum(fit.confusion) == 3990 and fit.metrics["threshold"] == fit.threshold
    at_half = fit_on_validation(TrainSpec(threshold=0.5), LABELS, predicted, rows)
    assert at_half.threshold == 0.5
    assert fit.metrics["validation_f1_at_threshold"] > 0.3


def test_a_precision_target_is_met_and_an_impossible_one_is_refused_naming_the_best():
    predicted, rows = validation()
    fit = fit_on_validation(TrainSpec(threshold=ThresholdTarget(precision=0.7)), LABELS, predicted, rows)
    assert fit.metrics["validation_precision_at_threshold"] >= 0.7
    predicted.loc[np.flatnonzero(rows["is_fraud"].fillna(True).to_numpy() == 0)[0], "score"] = 0.9999  # a negative on top
    with pytest.raises(UserError, match=r"train.threshold asks precision ≥ 0.999 on the validation split; the best "
                                        r"reachable is"):  # 200 frauds cannot outnumber that one negative 999 to 1
        fit_on_validation(TrainSpec(threshold=ThresholdTarget(precision=0.999)), LABELS, predicted, rows)


def test_a_regression_or_an_empty_split_keeps_the_fixed_threshold_and_no_calibrator():
    predicted, rows = validation()
    regression = fit_on_validation(TrainSpec(), LabelEncoding("amount", "regression"), predicted, rows)
    assert regression.threshold == 0.5 and regression.calibration is None and regression.confusion is None
    empty = fit_on_validation(TrainSpec(), LABELS, predicted.iloc[:0], rows.iloc[:0])
    assert empty.calibration is None
