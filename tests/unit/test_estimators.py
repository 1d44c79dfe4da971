"""Quality and label shift estimated before labels arrive (CBPE and BBSE), on simulated windows whose answer is known:
a latent x ~ N(0, 1), P(y=1 | x) = sigmoid(2x - 1), the model's calibrated probability exactly that (CBPE's
assumption holds) and its raw score another increasing function of x."""

import json
import time

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from mlray.monitor.estimators import (
    Estimate,
    assumption_bands,
    estimate_binary,
    estimate_multiclass,
    estimate_priors,
    joint_tail_depth,
    moved,
    outside_assumptions,
    prior_difference,
    prior_shifted,
    realised_binary,
    source_priors,
)
from mlray.quality import binary_metrics, label_metrics

SLOPE, BIAS = 2.0, -1.0
THRESHOLD = 0.7 * (np.log(0.4 / 0.6) - BIAS) / SLOPE + 0.2  # the score of P(y=1) = 0.4
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")


def window(rng: np.random.Generator, rows: int = 2000, shift: float = 0.0, concept_drift: bool = False):
    """(calibrated probability, raw score, labels) of a window; concept drift turns the relation of y to x round."""
    x = rng.normal(shift, 1.0, rows)
    probability = 1 / (1 + np.exp(-(SLOPE * x + BIAS)))
    truth = 1 / (1 + np.exp(-(-SLOPE * x + BIAS))) if concept_drift else probability
    return probability, 0.7 * x + 0.2, (rng.random(rows) < truth).astype(int)


def realised(labels: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """mlray.quality.binary_metrics' definitions, without scikit-learn's per-call cost (checked against it below)."""
    predicted = score >= threshold
    tp, positives, calls = float(labels[predicted].sum()), float(labels.sum()), float(predicted.sum())
    negatives = len(labels) - positives
    auc = (rankdata(score)[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    return {"accuracy": float((predicted == labels).mean()), "precision": tp / calls if calls else 0.0,
            "recall": tp / positives if positives else 0.0, "f1": 2 * tp / (calls + positives), "roc_auc": auc}


def mean_errors(pairs: list[tuple[dict, dict]]) -> dict[str, float]:
    return {m: float(np.mean([abs(estimates[m].value - truth[m]) for estimates, truth in pairs])) for m in METRICS}


@pytest.fixture(scope="module")
def calm_windows() -> list[tuple[dict, dict]]:
    """300 windows of 2,000 rows where the model is calibrated: (estimates, realised metrics)."""
    rng = np.random.default_rng(7)
    pairs = []
    for seed in range(300):
        probability, score, labels = window(rng)
        pairs.append((estimate_binary(probability, score, THRESHOLD, seed=seed), realised(labels, score, THRESHOLD)))
    return pairs


def test_an_estimate_is_an_interval_that_serialises_to_plain_floats():
    estimate = Estimate(np.float64(0.8), np.float32(0.75), 0.85)
    assert estimate.contains(0.75) and estimate.contains(0.85) and not estimate.contains(0.86)
    assert json.loads(json.dumps(estimate.to_dict())) == pytest.approx({"value": 0.8, "low": 0.75, "high": 0.85})
    assert all(type(v) is float for v in estimate.to_dict().values())


def test_the_realised_metrics_are_mlray_quality_s():
    rng = np.random.default_rng(1)
    for _ in range(3):
        _, score, labels = window(rng)
        expected = binary_metrics(labels, score, THRESHOLD)
        assert realised(labels, score, THRESHOLD) == pytest.approx({m: expected[m] for m in METRICS})


def test_the_point_estimates_track_the_realised_metrics(calm_windows):
    errors = mean_errors(calm_windows[:100])
    print(f"\nCBPE mean |estimated - realised| over 100 windows of 2,000 rows: {errors}")
    assert errors["roc_auc"] <= 0.02 and errors["accuracy"] <= 0.02
    assert errors["precision"] <= 0.03 and errors["recall"] <= 0.03


def test_the_90_percent_intervals_cover_the_realised_metric_about_90_percent_of_the_time(calm_windows):
    coverage = {m: float(np.mean([e[m].contains(r[m]) for e, r in calm_windows])) for m in METRICS}
    print(f"\nCBPE coverage of the 90% intervals over 300 windows: {coverage}")
    for metric in ("accuracy", "precision", "recall", "roc_auc"):
        assert 0.85 <= coverage[metric] <= 0.95, metric
    counts = calm_windows[0][0]
    assert counts["tp"].value + counts["fp"].value + counts["fn"].value + counts["tn"].value == pytest.approx(2000)


def test_without_drift_a_metric_is_rarely_outside_the_assumptions(calm_windows):
    flagged = [outside_assumptions(e, r) for e, r in calm_windows]
    rates = {m: float(np.mean([m in f for f in flagged])) for m in METRICS}
    print(f"\nno drift: share of windows flagging each metric: {rates}")
    assert max(rates.values()) <= 0.15


def test_covariate_shift_within_range_leaves_the_estimates_right():
    rng = np.random.default_rng(11)
    pairs = []
    for seed in range(100):
        probability, score, labels = window(rng, shift=0.5)
        pairs.append((estimate_binary(probability, score, THRESHOLD, seed=seed), realised(labels, score, THRESHOLD)))
    errors = mean_errors(pairs)
    print(f"\ncovariate shift (mean of x +0.5): mean |estimated - realised|: {errors}")
    assert errors["roc_auc"] <= 0.02 and errors["accuracy"] <= 0.02


def test_concept_drift_puts_the_realised_quality_outside_the_estimate():
    rng = np.random.default_rng(12)
    flagged = []
    for seed in range(100):
        probability, score, labels = window(rng, concept_drift=True)
        found = outside_assumptions(estimate_binary(probability, score, THRESHOLD, seed=seed),
                                    realised(labels, score, THRESHOLD))
        flagged.append(bool({"accuracy", "roc_auc"} & set(found)))
    print(f"\nconcept drift flagged (accuracy or ROC-AUC) in {np.mean(flagged):.0%} of windows")
    assert np.mean(flagged) >= 0.9


def test_a_metric_with_no_realised_value_or_no_interval_is_not_flagged():
    estimates = {"roc_auc": Estimate(0.8, float("nan"), float("nan")), "accuracy": Estimate(0.9, 0.88, 0.92)}
    assert outside_assumptions(estimates, {"roc_auc": 0.1, "accuracy": float("nan"), "recall": 0.0}) == []
    assert outside_assumptions(estimates, {"accuracy": 0.5}) == ["accuracy"]


def multiclass_window(rng: np.random.Generator, weights: np.ndarray, rows: int = 2000):
    logits = rng.normal(size=(rows, 2)) @ weights
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    labels = (rng.random((rows, 1)) > np.cumsum(probabilities, axis=1)[:, :-1]).sum(axis=1)
    return probabilities, labels


def test_multiclass_estimates_track_accuracy_and_macro_metrics():
    rng = np.random.default_rng(21)
    weights = np.array([[1.5, -1.0, 0.2], [0.3, 1.2, -1.4]])
    errors, covered = {m: [] for m in ("accuracy", "precision", "recall", "roc_auc")}, []
    for seed in range(50):
        probabilities, labels = multiclass_window(rng, weights)
        assert np.allclose(probabilities.sum(axis=1), 1) and set(labels.tolist()) == {0, 1, 2}
        estimates = estimate_multiclass(probabilities, seed=seed)
        truth = label_metrics(labels.tolist(), probabilities.argmax(axis=1).tolist())
        truth["roc_auc"] = roc_auc_score(labels, probabilities, multi_class="ovr")
        for metric in errors:
            errors[metric].append(abs(estimates[metric].value - truth[metric]))
        covered.append(all(estimates[m].contains(truth[m]) for m in errors))
    means = {m: float(np.mean(e)) for m, e in errors.items()}
    print(f"\nmulticlass mean |estimated - realised| over 50 windows: {means}; all four inside their intervals in "
          f"{np.mean(covered):.0%}")
    assert means["accuracy"] <= 0.02 and means["roc_auc"] <= 0.02
    assert means["precision"] <= 0.03 and means["recall"] <= 0.03
    assert np.mean(covered) >= 0.6


def test_multiclass_wants_rows_of_probabilities():
    with pytest.raises(ValueError):
        estimate_multiclass(np.array([[0.5, 0.7, 0.1]]))
    nearly = np.array([[0.2, 0.3, 0.50001]] * 50)
    assert 0 <= estimate_multiclass(nearly, draws=20)["accuracy"].value <= 1


def validation_and_window(rng: np.random.Generator, separation: float, prior: float):
    """A 20,000-row validation split at 1.8% positives with the F1-best threshold on its scores (positives
    ~ N(separation, 1), negatives ~ N(0, 1)) and a 5,000-row window at `prior`: (confusion, window predicted counts)."""
    truth = rng.random(20_000) < 0.018
    score = rng.normal(size=truth.size) + separation * truth
    order = np.argsort(-score)
    hits = np.cumsum(truth[order])
    threshold = score[order][np.argmax(2 * hits / (np.arange(1, truth.size + 1) + truth.sum()))]
    confusion = np.zeros((2, 2))
    np.add.at(confusion, ((score >= threshold).astype(int), truth.astype(int)), 1)
    moved = rng.random(5000) < prior
    called = rng.normal(size=moved.size) + separation * moved >= threshold
    return confusion, np.bincount(called.astype(int), minlength=2)


# separation 3 (ROC-AUC 0.98) meets ±0.01; at 1.5 (ROC-AUC 0.86) the window's 5,000 hard predictions alone leave the
# estimate a standard error near 0.01 (Var(μ) / (TPR - FPR)^2), so ±0.01 holds in ~65% of seeds there and ±0.02 in ~93%
@pytest.mark.parametrize("separation,tolerance,often,false_alarms", [(3.0, 0.01, 0.9, 0.10), (1.5, 0.02, 0.85, 0.12)])
def test_bbse_finds_a_shifted_prior_and_leaves_an_unchanged_one(separation, tolerance, often, false_alarms):
    within, flagged, covered, false_flags = [], [], [], []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        confusion, counts = validation_and_window(rng, separation, 0.06)
        estimate = estimate_priors(confusion, counts, seed=seed)
        within.append(abs(estimate[1].value - 0.06) <= tolerance)
        covered.append(estimate[1].contains(0.06))
        flagged.append(prior_shifted(source_priors(confusion), estimate) == [0, 1])
        confusion, counts = validation_and_window(rng, separation, 0.018)
        false_flags.append(bool(prior_shifted(source_priors(confusion), estimate_priors(confusion, counts, seed=seed))))
    print(f"\nBBSE, separation {separation}: 6% prior within ±{tolerance} in {np.mean(within):.0%}, interval covers it "
          f"in {np.mean(covered):.0%}, flagged in {np.mean(flagged):.0%}; 1.8% flagged in {np.mean(false_flags):.0%}")
    assert np.mean(within) >= often and np.mean(flagged) >= 0.95 and np.mean(covered) >= 0.8
    assert np.mean(false_flags) <= false_alarms


def test_the_source_prior_is_the_validation_share_with_a_wilson_interval():
    confusion = np.array([[19_000, 150], [640, 210]])
    before = source_priors(confusion)
    assert before[1].value == pytest.approx(360 / 20_000) and before[0].value + before[1].value == pytest.approx(1)
    assert before[1].low < 0.018 < before[1].high and before[1].high - before[1].low == pytest.approx(0.0031, abs=3e-4)
    assert prior_shifted(np.array([0.982, 0.018]), before) == []
    assert prior_shifted(np.array([0.9, 0.1]), before) == [0, 1]


def test_a_classifier_near_chance_gives_a_wide_interval_and_a_useless_one_no_answer():
    rng = np.random.default_rng(3)
    truth = rng.random(20_000) < 0.3
    called = rng.random(20_000) < 0.5  # predictions independent of the truth
    confusion = np.zeros((2, 2))
    np.add.at(confusion, (called.astype(int), truth.astype(int)), 1)
    near = estimate_priors(confusion, np.array([2600, 2400]))
    print(f"\nnear-chance classifier: {[e.to_dict() for e in near]}")
    assert all(e.high - e.low >= 0.5 for e in near)
    always_negative = estimate_priors(np.array([[19_000.0, 360.0], [0.0, 0.0]]), np.array([5000, 0]))
    assert [(e.low, e.high) for e in always_negative] == [(0.0, 1.0), (0.0, 1.0)]
    unseen_class = estimate_priors(np.array([[900.0, 0.0, 0.0], [50.0, 0.0, 0.0], [50.0, 0.0, 0.0]]), np.array([10, 5, 5]))
    assert (unseen_class[1].low, unseen_class[1].high) == (0.0, 1.0)
    assert prior_shifted(source_priors(confusion), near) == []


def test_estimating_10_000_rows_is_quick():
    probability, score, _ = window(np.random.default_rng(5), rows=10_000)
    estimate_binary(probability, score, THRESHOLD)
    started = time.perf_counter()
    estimates = estimate_binary(probability, score, THRESHOLD, draws=300)
    print(f"\nestimate_binary on 10,000 rows, 300 draws: {1000 * (time.perf_counter() - started):.0f} ms")
    assert set(estimates) == {"precision", "recall", "accuracy", "f1", "roc_auc", "tp", "fp", "fn", "tn"}


def test_the_assumption_bands_widen_the_90_percent_intervals_to_a_joint_test_narrower_than_bonferroni():
    probability, score, labels = window(np.random.default_rng(8))
    bands, level = assumption_bands(probability, score, THRESHOLD, draws=2000, seed=4)
    intervals = estimate_binary(probability, score, THRESHOLD, draws=2000, seed=4)
    assert set(bands) == set(METRICS)
    for metric in METRICS:  # the same draws: the joint bands' tails lie outside the 5% and 95%
        assert bands[metric].value == intervals[metric].value
        assert bands[metric].low <= intervals[metric].low and intervals[metric].high <= bands[metric].high
    assert 1 - 0.01 / 2 < level < 1 - 0.01 / 5  # narrower than Bonferroni's: the metrics move together
    found = realised_binary(labels, score, THRESHOLD)
    assert {m: found[m] for m in METRICS} == pytest.approx(realised(labels, score, THRESHOLD))
    too_few, _ = assumption_bands(probability, score, THRESHOLD, draws=50)  # 50 draws cannot test at 1%
    assert all(np.isnan([b.low, b.high]).all() for b in too_few.values())
    assert outside_assumptions(too_few, {m: -1.0 for m in METRICS}) == []


def test_joint_bands_hold_their_level_over_correlated_and_independent_metrics():
    """Fresh draws of the same distribution leave some band at most α of the time, whether the metrics move together
    (one depth serves them all) or not (the depth falls back towards Bonferroni's)."""
    rng = np.random.default_rng(11)
    for correlated in (True, False):
        common = rng.normal(size=(6000, 1))
        values = common + (0.05 if correlated else 5.0) * rng.normal(size=(6000, 4))
        depth = joint_tail_depth(list(values[:2000].T), 0.05)
        ordered = np.sort(values[:2000], axis=0)
        fresh = values[2000:]
        outside = ((fresh < ordered[depth - 1]) | (fresh > ordered[-depth])).any(axis=1).mean()
        assert 0.03 <= outside <= 0.065, (correlated, depth, outside)  # 4,000 fresh draws: ±0.7 points of noise


def called(rng: np.random.Generator, rows: int, prior: float) -> np.ndarray:
    """Rows predicted negative and positive at threshold 2 when positives score N(3, 1) and negatives N(0, 1)."""
    tpr, fpr = 0.8413447460685429, 0.022750131948179195
    positive = rng.binomial(rows, prior * tpr + (1 - prior) * fpr)
    return np.array([rows - positive, positive])


def test_the_difference_of_two_bbse_priors_holds_its_level_and_sees_a_move():
    rng = np.random.default_rng(9)
    truth = rng.random(20_000) < 0.018
    confusion = np.zeros((2, 2))
    np.add.at(confusion, ((rng.normal(size=truth.size) + 3 * truth >= 2).astype(int), truth.astype(int)), 1)
    same, apart = [], []
    for seed in range(200):
        same.append(moved(prior_difference(confusion, called(rng, 2000, 0.05), called(rng, 1500, 0.05), seed=seed)))
        if seed < 100:
            apart.append(moved(prior_difference(confusion, called(rng, 2000, 0.06), called(rng, 5000, 0.018), seed=seed)))
    print(f"\nBBSE difference: equal priors flagged in {np.mean([bool(m) for m in same]):.1%} of 200, 6% against 1.8% "
          f"in {np.mean([m == [0, 1] for m in apart]):.0%} of 100")
    assert np.mean([bool(m) for m in same]) <= 0.01 and np.mean([m == [0, 1] for m in apart]) >= 0.95
    difference = prior_difference(confusion, np.array([1900, 100]), np.array([1950, 50]))
    assert difference[1].value > 0 > difference[0].value and difference[1].value == pytest.approx(-difference[0].value)
    assert [(d.low, d.high) for d in prior_difference(confusion, np.array([10, 5]), np.array([0, 0]))] == [(-1, 1)] * 2
    useless = prior_difference(np.array([[19_000.0, 360.0], [0.0, 0.0]]), np.array([5000, 0]), np.array([900, 0]))
    assert [(d.low, d.high) for d in useless] == [(-1.0, 1.0), (-1.0, 1.0)] and moved(useless) == []
