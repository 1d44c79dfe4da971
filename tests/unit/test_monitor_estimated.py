"""A window's quality and class shares estimated from the champion's scores before labels arrive, as the monitor does
it: the package's calibrator and validation confusion, applied to served scores (no Ray, no registry).

| behaviour | test |
|---|---|
| quality estimated within 0.03 of what the labels later say | test_quality_is_estimated_before_labels_near_what_they_say |
| a fraud rate of 6% against 1.8% in training is a moved class share | test_a_moved_fraud_rate_is_seen_from_unlabelled_scores |
| an estimated drop counts only when its whole interval is below | test_an_estimated_drop_counts_only_below_its_interval |
| nothing to estimate without a calibrator | test_a_package_without_a_calibrator_gives_no_estimates |
| unmatched, the priors are judged against the validation split | test_without_matched_rows_the_validation_split_is_the_source |
| night and day windows: no prior shift against their own hours | test_seasonal_windows_are_no_prior_shift_against_their_hours |
| 1.8% → 6% fraud is seen against the reference rows of the same hours | test_a_prior_shift_is_seen_against_the_same_hours |
| nothing matched: the shares are not judged | test_with_nothing_matched_the_shares_are_not_judged |
| multiclass: from the logged probabilities | test_a_multiclass_window_is_estimated_from_its_class_probabilities |
| the monitor reads them from the log, matched | test_the_monitor_estimates_a_multiclass_window_from_its_log_rows |
"""

from functools import cache
from types import SimpleNamespace

import numpy as np
import pytest
from multiclass_world import multiclass_champion, multiclass_rows

from mlray.calibration import fit_calibrator
from mlray.monitor.context import match
from mlray.monitor.estimated import WindowEstimates, estimate_window
from mlray.monitor.estimators import source_priors
from mlray.quality import binary_metrics

THRESHOLD = 0.3


def rows(count: int, prior: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of a classifier whose positives score higher: a latent N(3, 1) against N(0, 1), squashed."""
    rng = np.random.default_rng(seed)
    y = (rng.random(count) < prior).astype(np.int64)
    latent = rng.normal(np.where(y == 1, 3.0, 0.0), 1.0)
    return y, squash(latent)


def squash(latent: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(1.5 * latent - 5.0)))  # scores far from calibrated: the calibrator has work to do


@cache
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


def test_without_matched_rows_the_validation_split_is_the_source():
    reference = champion()
    found = estimate_window(reference, rows(5_000, 0.018, seed=3)[1], seed=3)
    assert found.prior_source == "validation" and found.prior_difference == {}
    assert found.source_priors == {str(c): p.to_dict() for c, p in zip(reference.classes, source_priors(reference.confusion))}


# Seasonality, simulated: traffic peaks at 14h and is quietest at 2h; fraud is likelier at night (5% of the rows before
# 6h, 1.4% after, 1.8% of a day's), and the model, which knows the hour, scores night rows higher whatever their class.
HOURS = np.arange(24)
TRAFFIC = 1 + 0.6 * np.cos(2 * np.pi * (HOURS - 14) / 24)
NIGHT = HOURS < 6
FRAUD_ODDS = np.exp(-4.25 + 1.3 * NIGHT)
NIGHT_HOURS, DAY_HOURS = np.array([2, 3, 4]), np.array([13, 14, 15])
BOOST = 3.5  # fraud's odds in every hour: 1.8% of a day's rows → 6% (the generator's Shift(prior=1.0) gives 6.1%)


def hours_of_traffic(count: int, hours: np.ndarray, seed: int, boost: float = 1.0) -> tuple[np.ndarray, ...]:
    """(hour, label, score) of `count` rows of the given hours, in their share of the day's traffic."""
    rng = np.random.default_rng(seed)
    hour = rng.choice(hours, size=count, p=TRAFFIC[hours] / TRAFFIC[hours].sum())
    odds = boost * FRAUD_ODDS[hour]
    y = (rng.random(count) < odds / (1 + odds)).astype(np.int64)
    return hour, y, squash(rng.normal(3.0 * y + 0.6 * NIGHT[hour], 1.0))


@pytest.fixture(scope="module")
def seasonal() -> SimpleNamespace:
    """A champion validated on 20,000 rows of a day's traffic, and its reference: another day, 24,000 rows."""
    _, y, scores = hours_of_traffic(20_000, HOURS, seed=1)
    confusion = np.zeros((2, 2), dtype=np.int64)
    np.add.at(confusion, ((scores >= THRESHOLD).astype(int), y), 1)
    hour, _, reference_scores = hours_of_traffic(24_000, HOURS, seed=2)
    return SimpleNamespace(task="binary", classes=[False, True], threshold=THRESHOLD, confusion=confusion,
                           calibrator=fit_calibrator("binary", y, scores), hours=hour, scores=reference_scores)


def matched_estimates(seasonal: SimpleNamespace, hours: np.ndarray, seed: int, boost: float = 1.0) -> WindowEstimates:
    """A 2,000-row window of those hours, its priors judged against the reference rows matched to its hours."""
    hour, _, scores = hours_of_traffic(2000, hours, seed, boost)
    matched = match(seasonal.hours, hour, seed=seed)
    return estimate_window(seasonal, scores, seed=seed, matched_reference_scores=seasonal.scores[matched.reference_rows],
                           window_rows=matched.window_rows)


def test_seasonal_windows_are_no_prior_shift_against_their_hours(seasonal):
    hours = [NIGHT_HOURS if seed % 2 else DAY_HOURS for seed in range(200)]
    matched = [matched_estimates(seasonal, h, 1000 + seed) for seed, h in enumerate(hours)]
    unmatched = [estimate_window(seasonal, hours_of_traffic(2000, h, 1000 + seed)[2], seed=1000 + seed)
                 for seed, h in enumerate(hours)]
    night, day = np.mean([bool(e.prior_shift) for e in unmatched[1::2]]), np.mean([bool(e.prior_shift) for e in unmatched[::2]])
    print(f"\ncalm night and day windows: a prior shift against the matched hours in "
          f"{np.mean([bool(e.prior_shift) for e in matched]):.1%} of 200, against the validation split in "
          f"{night:.0%} of night windows and {day:.0%} of day windows")
    assert all(e.prior_source == "matched" for e in matched)
    assert np.mean([bool(e.prior_shift) for e in matched]) <= 0.01
    assert night >= 0.9 and np.mean([bool(e.prior_shift) for e in unmatched]) >= 0.5


def test_a_prior_shift_is_seen_against_the_same_hours(seasonal):
    assert np.mean(hours_of_traffic(200_000, HOURS, seed=3, boost=BOOST)[1]) == pytest.approx(0.06, abs=0.003)
    shifted = [matched_estimates(seasonal, NIGHT_HOURS if seed % 2 else DAY_HOURS, 2000 + seed, BOOST)
               for seed in range(100)]
    flagged = [e.prior_shift == ["True"] for e in shifted]
    print(f"\nfraud 1.8% → 6%: a prior shift against the matched hours in {np.mean(flagged[1::2]):.0%} of night "
          f"windows and {np.mean(flagged[::2]):.0%} of day windows")
    assert np.mean(flagged) >= 0.9
    moved = shifted[1]  # a night window: 5% of the matched rows' are fraud, 15% of its own
    assert moved.source_priors["True"]["value"] < moved.priors["True"]["value"]
    assert moved.prior_difference["True"]["low"] > 0


def test_with_nothing_matched_the_shares_are_not_judged(seasonal):
    found = estimate_window(seasonal, hours_of_traffic(2000, NIGHT_HOURS, 4)[2], matched_reference_scores=np.zeros(0))
    assert found.prior_source == "matched" and found.prior_shift == [] and found.source_priors == {}
    assert found.priors and found.quality


def test_a_multiclass_window_is_estimated_from_its_class_probabilities():
    reference = multiclass_champion()
    y, probabilities = multiclass_rows(5_000, [0.6, 0.3, 0.1], seed=1)
    calm = estimate_window(reference, probabilities.max(axis=1), seed=1, probabilities=probabilities)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == y))
    assert abs(calm.quality["accuracy"]["value"] - accuracy) < 0.015, (calm.quality["accuracy"], accuracy)
    assert set(calm.quality) == {"accuracy", "precision", "recall", "roc_auc"} and calm.prior_shift == []
    assert calm.prior_source == "validation" and abs(calm.priors["c"]["value"] - 0.1) < 0.02
    _, moved = multiclass_rows(5_000, [0.45, 0.3, 0.25], seed=2)  # class c from 10% to 25%
    shifted = estimate_window(reference, moved.max(axis=1), seed=2, probabilities=moved)
    assert "c" in shifted.prior_shift and abs(shifted.priors["c"]["value"] - 0.25) < 0.03, shifted.priors
    # matched to reference rows of the same kind of traffic: judged against them, the move found again
    _, matched = multiclass_rows(3_000, [0.6, 0.3, 0.1], seed=3)
    against = estimate_window(reference, moved.max(axis=1), seed=2, probabilities=moved,
                              matched_reference_probabilities=matched)
    assert against.prior_source == "matched" and "c" in against.prior_shift
    assert estimate_window(reference, moved.max(axis=1), seed=2) == WindowEstimates()  # no probabilities logged


def test_the_monitor_estimates_a_multiclass_window_from_its_log_rows():
    """`WindowChecks.estimates` reads the `probabilities` column of the champion's rows; matched to the window's
    periods, the class shares are judged against the matched reference rows' calls; a row logged without them (an
    older log) leaves the window unestimated."""
    import pyarrow as pa

    from mlray.monitor.checks import WindowChecks
    from mlray.monitor.detectors import DriftResult

    _, moved = multiclass_rows(4_000, [0.45, 0.3, 0.25], seed=4)
    _, reference_rows = multiclass_rows(6_000, [0.6, 0.3, 0.1], seed=5)
    reference = SimpleNamespace(**vars(multiclass_champion()) | {"probabilities": reference_rows})
    rows = pa.table({"probabilities": pa.array(moved.tolist(), pa.list_(pa.float64()))})
    matched = DriftResult([], [], [], [], 0.01, context={"period": "hour_of_day"},
                          matched_rows=np.arange(0, 6_000, 2), scored_rows=np.ones(4_000, bool))
    found = WindowChecks.estimates(reference, rows, moved.max(axis=1), matched, seq=1)
    assert found.prior_source == "matched" and "c" in found.prior_shift and "accuracy" in found.quality
    unmatched = DriftResult([], [], [], [], 0.01, context={"period": "hour_of_day"})  # nothing matched: not judged
    assert WindowChecks.estimates(reference, rows, moved.max(axis=1), unmatched, seq=1).prior_shift == []
    older = pa.table({"probabilities": pa.array([None, *moved[1:].tolist()], pa.list_(pa.float64()))})
    assert WindowChecks.estimates(reference, older, moved.max(axis=1), matched, seq=1) == WindowEstimates()
    other = pa.table({"probabilities": pa.array([[0.5, 0.5], *moved[1:].tolist()], pa.list_(pa.float64()))})
    assert WindowChecks.estimates(reference, other, moved.max(axis=1), matched, seq=1) == WindowEstimates()
    two = pa.table({"probabilities": pa.array(moved[:, :2].tolist(), pa.list_(pa.float64()))})  # another package's
    assert WindowChecks.estimates(reference, two, moved.max(axis=1), matched, seq=1) == WindowEstimates()
