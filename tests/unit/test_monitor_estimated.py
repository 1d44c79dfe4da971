"""A window's quality and class shares estimated from the champion's scores before labels arrive, as the monitor does
it: the package's calibrator and validation confusion, applied to served scores (no Ray, no registry).

| behaviour | test |
|---|---|
| quality estimated within 0.03 of what the labels later say | test_quality_is_estimated_before_labels_near_what_they_say |
| a fraud rate of 6% against 1.8% in training is a moved class share | test_a_moved_fraud_rate_is_seen_from_unlabelled_scores |
| an estimated drop counts only when its whole interval is below | test_an_estimated_drop_counts_only_below_its_interval |
| nothing to estimate without a calibrator | test_a_package_without_a_calibrator_gives_no_estimates |
"""

from types import SimpleNamespace

import numpy as np

from mlray.calibration import fit_calibrator
from mlray.monitor.estimated import WindowEstimates, estimate_window
from mlray.quality import binary_metrics

THRESHOLD = 0.3


def rows(count: int, prior: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of a classifier whose positives score higher: a latent N(3, 1) against N(0, 1), squashed."""
    rng = np.random.default_rng(seed)
    y = (rng.random(count) < prior).astype(np.int64)
    latent = rng.normal(np.where(y == 1, 3.0, 0.0), 1.0)
    return y, 1 / (1 + np.exp(-(1.5 * latent - 5.0)))  # scores far from calibrated: the calibrator has work to do


def champion() -> SimpleNamespace:
    """What the monitor reads of a package: its task, classes, threshold, calibrator and validation confusion."""
    y, scores = rows(20_000, 0.018, seed=0)
    confusion = np.zeros((2, 2), dtype=np.int64)
    np.add.at(confusion, ((scores >= THRESHOLD).astype(int), y), 1)
    return SimpleNamespace(task="binary", classes=[False, True], threshold=THRESHOLD, confusion=confusion,
                           calibrator=fit_calibrator("binary", y, scores))


def test_quality_is_estimated_before_labels_near_what_they_say():
    reference = champion()
    y, scores = rows(5_000, 0.018, seed=1)
    estimated = estimate_window(reference, scores).quality
    realised = binary_metrics(y, scores, THRESHOLD)
    # one window: accuracy and ROC-AUC are tight; precision and recall rest on about 90 frauds
    for metric, tolerance in (("accuracy", 0.01), ("roc_auc", 0.03), ("precision", 0.08), ("recall", 0.08)):
        assert abs(estimated[metric]["value"] - realised[metric]) < tolerance, (metric, estimated[metric], realised)
        assert estimated[metric]["low"] <= estimated[metric]["value"] <= estimated[metric]["high"]


def test_a_moved_fraud_rate_is_seen_from_unlabelled_scores():
    reference = champion()
    shifted = [estimate_window(reference, rows(5_000, 0.06, seed=s)[1], seed=s) for s in range(20)]
    calm = [estimate_window(reference, rows(5_000, 0.018, seed=100 + s)[1], seed=s) for s in range(20)]
    assert sum(e.prior_shift == ["True"] for e in shifted) >= 19
    assert sum(bool(e.prior_shift) for e in calm) <= 2
    assert np.mean([abs(e.priors["True"]["value"] - 0.06) for e in shifted]) < 0.01


def test_an_estimated_drop_counts_only_below_its_interval():
    estimates = WindowEstimates({"roc_auc": {"value": 0.80, "low": 0.76, "high": 0.84}})
    assert round(estimates.drop("roc_auc", {"roc_auc": 0.90}), 6) == 0.10
    assert estimates.drop("roc_auc", {"roc_auc": 0.83}) == 0.0  # within the interval: no drop to speak of
    assert estimates.drop("accuracy", {"roc_auc": 0.90}) is None


def test_a_package_without_a_calibrator_gives_no_estimates():
    reference = SimpleNamespace(task="binary", classes=[False, True], threshold=0.5, confusion=None, calibrator=None)
    assert estimate_window(reference, np.array([0.2, 0.9])) == WindowEstimates()
