"""Calibration and the binary decision threshold on synthetic validation splits whose answer is known: the true
probability of every row is drawn first, its label from it, and the model's score is a known distortion of it."""

import json

import numpy as np
import pytest
from multiclass_world import multiclass_rows
from scipy.special import expit, logit, softmax

from mlray.calibration import Calibrator, choose_threshold, fit_calibrator
from mlray.errors import UserError
from mlray.quality import expected_calibration_error

DISTORTIONS = {"cubed": lambda p: p ** 3, "temperature 3": lambda p: expit(3 * logit(p))}


def binary(rows: int, rng: np.random.Generator, distort) -> tuple[np.ndarray, np.ndarray]:
    p = rng.uniform(0.02, 0.98, rows)
    return (rng.random(rows) < p).astype(np.int64), distort(p)


def logistic(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scores exactly Platt-miscalibrated: the true logit is score logit / 2.5 + 0.5."""
    z = rng.normal(0, 1.5, rows)
    return (rng.random(rows) < expit(z)).astype(np.int64), expit(2.5 * (z - 0.5))


def step(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A score that only says which half a row is in: 20% positive below 0.5, 80% above, whatever the score."""
    s = rng.uniform(0, 1, rows)
    return (rng.random(rows) < np.where(s < 0.5, 0.2, 0.8)).astype(np.int64), s


def three_classes(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Overconfident probabilities: the true softmax's logits times 3."""
    z = rng.normal(0, 1.2, (rows, 3)) + np.array([0.3, 0.0, -0.3])
    y = (rng.random(rows)[:, None] > np.cumsum(softmax(z, axis=1), axis=1)).sum(axis=1)
    return y, softmax(3 * z, axis=1)


def top_class_ece(y: np.ndarray, p: np.ndarray) -> float:
    return expected_calibration_error((p.argmax(axis=1) == y).astype(float), p.max(axis=1))


@pytest.mark.parametrize("distortion", DISTORTIONS)
def test_calibration_at_least_halves_the_error_on_a_fresh_sample(distortion):
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        calibrator = fit_calibrator("binary", *binary(10_000, rng, DISTORTIONS[distortion]), seed=seed)
        y, s = binary(100_000, rng, DISTORTIONS[distortion])
        before, after = expected_calibration_error(y, s), expected_calibration_error(y, calibrator.apply(s))
        # measured over 30 seeds: before ≥ 0.14, after ≤ 0.015, after / before ≤ 0.10
        assert after <= before / 2 and after < 0.02, (seed, calibrator.method, before, after)
        assert calibrator.ece_after <= calibrator.ece_before / 2


def test_platt_wins_on_logistic_scores_and_isotonic_on_a_step():
    # measured over 40 seeds: Platt chosen 40 times on 300 logistic rows, isotonic 40 times on 5,000 step rows
    for seed in range(5):
        assert fit_calibrator("binary", *logistic(300, np.random.default_rng(seed)), seed=seed).method == "platt"
    for seed in range(3):
        assert fit_calibrator("binary", *step(5_000, np.random.default_rng(seed)), seed=seed).method == "isotonic"


@pytest.mark.parametrize("make", [lambda rng: logistic(300, rng), lambda rng: step(5_000, rng)], ids=["platt", "isotonic"])
def test_the_json_round_trip_applies_the_same(make):
    calibrator = fit_calibrator("binary", *make(np.random.default_rng(7)), seed=7)
    again = Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    scores = np.concatenate([np.linspace(0, 1, 1001), [-0.5, 1.5]])
    assert again == calibrator
    assert np.array_equal(again.apply(scores), calibrator.apply(scores))
    assert ((calibrator.apply(scores) >= 0) & (calibrator.apply(scores) <= 1)).all()


def test_an_unknown_or_malformed_calibration_is_refused():
    with pytest.raises(UserError, match="calibration method 'beta' is unknown"):
        Calibrator.from_dict({"task": "binary", "method": "beta", "columns": []})
    with pytest.raises(UserError, match="malformed"):
        Calibrator.from_dict({"task": "binary", "method": "platt", "columns": [{"slope": 1.0}]})
    with pytest.raises(UserError, match="cannot have 2 column maps"):
        Calibrator.from_dict({"task": "binary", "method": "platt", "columns": [{"slope": 1, "intercept": 0}] * 2})


def test_multiclass_rows_sum_to_one_and_the_top_class_error_drops():
    rng = np.random.default_rng(3)
    calibrator = fit_calibrator("multiclass", *three_classes(6_000, rng), seed=3)
    y, s = three_classes(100_000, rng)
    p = calibrator.apply(s)
    assert p.shape == s.shape and np.allclose(p.sum(axis=1), 1.0)
    # measured over 20 seeds: before ≥ 0.20, after ≤ 0.014
    before, after = top_class_ece(y, s), top_class_ece(y, p)
    assert after <= before / 2 and after < 0.025, (calibrator.method, before, after)
    assert Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict()))).apply(s[:100]) == pytest.approx(p[:100])


def test_vector_scaling_is_chosen_where_it_is_exact_and_keeps_every_class_calibrated():
    rng = np.random.default_rng(5)
    calibrator = fit_calibrator("multiclass", *three_classes(6_000, rng), seed=5)
    assert calibrator.method == "vector" and abs(calibrator.vector.temperature - 1 / 3) < 0.03, calibrator.vector
    # a rare class: one-vs-rest maps renormalised miss its share; vector scaling is exact here (temperature 0.6, the
    # log priors as biases), so each class's mean probability matches its share of fresh rows
    y, served = multiclass_rows(20_000, [0.6, 0.3, 0.1], seed=0)
    fitted = fit_calibrator("multiclass", y, served)
    assert fitted.method == "vector" and abs(fitted.vector.temperature - 0.6) < 0.03
    y, served = multiclass_rows(100_000, [0.6, 0.3, 0.1], seed=1)
    shares, mean_probabilities = np.bincount(y) / len(y), fitted.apply(served).mean(axis=0)
    assert mean_probabilities == pytest.approx(shares, abs=0.004)
    again = Calibrator.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert again == fitted and np.array_equal(again.apply(served[:100]), fitted.apply(served[:100]))


def test_a_malformed_vector_scaling_is_refused():
    good = {"task": "multiclass", "method": "vector", "columns": [], "temperature": 0.5, "bias": [0.1, -0.1]}
    assert Calibrator.from_dict(good).vector.bias == (0.1, -0.1)
    with pytest.raises(UserError, match="a binary vector calibration cannot have 0 column maps"):
        Calibrator.from_dict(good | {"task": "binary"})
    with pytest.raises(UserError, match="malformed parameters: vector scaling needs a finite temperature"):
        Calibrator.from_dict(good | {"bias": [0.1, float("nan")]})
    with pytest.raises(UserError, match="malformed parameters"):
        Calibrator.from_dict({k: v for k, v in good.items() if k != "temperature"})
    with pytest.raises(ValueError, match="the calibrator maps 2 classes, the scores have 3"):
        Calibrator.from_dict(good).apply(np.full((4, 3), 1 / 3))


def test_identity_on_a_single_class_or_a_handful_of_rows():
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.9])
    few = fit_calibrator("binary", np.array([0, 0, 1, 1, 1]), s)
    single = fit_calibrator("binary", np.ones(500, dtype=np.int64), np.random.default_rng(0).uniform(size=500))
    one_class = fit_calibrator("multiclass", np.zeros(100, dtype=np.int64), np.full((100, 3), 1 / 3))
    assert few.method == single.method == one_class.method == "identity"
    assert np.array_equal(few.apply(s), s) and few.ece_after == few.ece_before
    assert Calibrator.from_dict(json.loads(json.dumps(few.to_dict()))) == few


def two_gaussians(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = (rng.random(rows) < 0.3).astype(np.int64)
    return y, expit(rng.normal(np.where(y == 1, 1.0, -1.0), 1.0))


def rates(y: np.ndarray, s: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 of predicting positive at score ≥ each threshold."""
    predicted = s[None, :] >= thresholds[:, None]
    hits = (predicted & (y[None, :] == 1)).sum(axis=1)
    precision = hits / np.maximum(predicted.sum(axis=1), 1)
    recall = hits / y.sum()
    return precision, recall, 2 * precision * recall / np.maximum(precision + recall, 1e-12)


def test_the_f1_threshold_is_near_the_best_on_fresh_data():
    rng = np.random.default_rng(0)
    chosen = choose_threshold(*two_gaussians(5_000, rng), "f1")
    y, s = two_gaussians(50_000, rng)
    grid = np.linspace(0.001, 0.999, 999)
    # measured over 20 seeds: the chosen threshold's fresh F1 is at most 0.0074 below the grid's best
    assert rates(y, s, np.array([chosen.value]))[2][0] >= rates(y, s, grid)[2].max() - 0.01
    assert chosen.rule == "f1" and 0 < chosen.value < 1 and set(chosen.achieved) == {"precision", "recall", "f1"}


def test_precision_and_recall_targets_are_met_on_validation():
    y, s = two_gaussians(5_000, np.random.default_rng(1))
    cuts = np.unique(s)
    precision, recall, _ = rates(y, s, cuts)
    at_precision = choose_threshold(y, s, {"precision": 0.8})
    p, r, _ = rates(y, s, np.array([at_precision.value]))
    assert p[0] >= 0.8 and r[0] == recall[precision >= 0.8].max()  # the most recall that precision allows
    assert at_precision.achieved["precision"] == pytest.approx(p[0]) and at_precision.rule == "precision ≥ 0.8"
    at_recall = choose_threshold(y, s, {"recall": 0.9})
    p, r, _ = rates(y, s, np.array([at_recall.value]))
    lowest_accepted = s[s >= at_recall.value].min()
    assert r[0] >= 0.9 and (recall[cuts > lowest_accepted] < 0.9).all()  # the highest threshold that keeps it
    assert at_recall.achieved["recall"] == pytest.approx(r[0])


def test_an_unreachable_precision_names_the_best_reachable():
    y = np.array([0, 1, 0, 1, 1, 0, 1, 1, 1, 0])  # by falling score: precision peaks at 6/9 over the top nine
    s = np.linspace(0.95, 0.05, 10)
    with pytest.raises(UserError, match=r"asks precision ≥ 0.9 on the validation split; the best reachable is 0.6667 "
                                        r"at threshold 0\.1"):
        choose_threshold(y, s, {"precision": 0.9})


def test_degenerate_splits_and_rules():
    no_positive = choose_threshold(np.zeros(50, dtype=np.int64), np.linspace(0, 1, 50), "f1")
    assert no_positive.value == 0.5 and "no positive" in no_positive.reason
    extremes = choose_threshold(np.array([0, 0, 1, 1]), np.array([0.0, 0.0, 1.0, 1.0]), {"recall": 1.0})
    assert 0 < extremes.value < 1 and extremes.achieved == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    with pytest.raises(UserError, match="is not a rule"):
        choose_threshold(np.array([0, 1]), np.array([0.2, 0.8]), {"precision": 0.9, "recall": 0.9})
