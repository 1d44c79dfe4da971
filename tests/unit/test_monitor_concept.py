"""Concept drift once labels arrive: CBPE's estimate from the labelled rows' scores against the metrics their labels
give (`estimated.check_assumptions`), each metric's band wide enough that all five together flag a calm window at most
1% of the time. On the card-fraud generator with a logistic model trained on it (calibrator and threshold fitted on
its validation split), on simulated windows whose calibrated probability is exact, and on a three-class world with
its fitted calibrator (four metrics).

| behaviour | test |
|---|---|
| calm labelled windows are flagged at most 2% of the time | test_calm_generated_windows_are_rarely_flagged |
| the generator's concept drift (0.5) is flagged in ≥ 95% of the windows judged | test_generated_concept_drift_is_flagged |
| a simulated change of p(y given x) is flagged, calm windows rarely | test_a_simulated_change_of_p_y_given_x_is_flagged |
| the realised metrics are mlray.quality's | test_the_realised_metrics_are_mlray_quality_s |
| each band: joint level, around the estimate | test_each_band_holds_the_estimate_between_the_joint_and_the_bonferroni_level |
| too few labels of a class, a regression, no calibrator: not judged | test_what_cannot_be_judged_says_why |
| multiclass: calm rarely flagged, 10% random labels are | test_a_multiclass_model_s_estimates_are_checked_against_its_labels |
| multiclass: the realised metrics are mlray.quality's | test_a_multiclass_check_s_realised_metrics_are_mlray_quality_s |
| multiclass: odd rows left out, too few of a class not judged | test_what_a_multiclass_check_leaves_out_or_cannot_judge |
"""

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from multiclass_world import multiclass_champion, multiclass_rows
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from mlray.calibration import choose_threshold, fit_calibrator
from mlray.lake.synthetic import RISKY_CATEGORIES, RISKY_COUNTRIES, Shift, generate_transactions
from mlray.monitor.estimated import AssumptionCheck, check_assumptions
from mlray.quality import binary_metrics, label_metrics

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")


def features(table: pa.Table) -> np.ndarray:
    """What a simple model sees of a transaction: amount, night, risky category or country, burst, new account,
    device."""
    def column(name: str) -> np.ndarray:
        return table.column(name).to_numpy(zero_copy_only=False)

    category, device = column("merchant_category"), column("device")
    night = pc.hour(table.column("event_time")).to_numpy(zero_copy_only=False) < 6
    return np.column_stack([np.log1p(column("amount")), night, np.isin(category, list(RISKY_CATEGORIES)),
                            np.isin(column("country"), list(RISKY_COUNTRIES)), column("tx_count_1h") >= 3,
                            column("account_age_days") < 60, device == "pos", device == "desktop",
                            category == "gaming"]).astype(float)


def fraud(table: pa.Table) -> np.ndarray:
    return table.column("is_fraud").to_numpy(zero_copy_only=False).astype(int)


@pytest.fixture(scope="module")
def champion() -> SimpleNamespace:
    """A logistic model trained on 60,000 generated rows; its calibrator and F1 threshold fitted on 20,000 more."""
    train, validation = generate_transactions(60_000, seed=1), generate_transactions(20_000, seed=2)
    model = LogisticRegression(max_iter=1000).fit(features(train), fraud(train))
    scores = model.predict_proba(features(validation))[:, 1]
    return SimpleNamespace(task="binary", classes=[False, True], confusion=None, model=model,
                           threshold=choose_threshold(fraud(validation), scores, "f1").value,
                           calibrator=fit_calibrator("binary", fraud(validation), scores))


def generated_checks(champion: SimpleNamespace, windows: int, shift: Shift, first_seed: int) -> list[AssumptionCheck]:
    """The checks of 2,000-row generated windows, labels as the log keeps them: (label text, served score)."""
    checks = []
    for seed in range(first_seed, first_seed + windows):
        table = generate_transactions(2000, seed=seed, shift=shift)
        scores = champion.model.predict_proba(features(table))[:, 1]
        checks.append(check_assumptions(champion, [(str(bool(y)), s) for y, s in zip(fraud(table), scores)], seed=seed))
    return checks


def rates(checks: list[AssumptionCheck]) -> str:
    judged = [c for c in checks if c.judged]
    each = {m: round(float(np.mean([m in c.outside for c in judged])), 3) for m in METRICS}
    return f"{np.mean([c.concept_drift for c in checks]):.1%} of {len(checks)} windows ({len(judged)} judged; {each})"


def test_calm_generated_windows_are_rarely_flagged(champion):
    checks = generated_checks(champion, 100, Shift(), first_seed=1000)
    print(f"\ncalm generated windows flagged: {rates(checks)}")
    assert sum(c.judged for c in checks) >= 95
    assert np.mean([c.concept_drift for c in checks]) <= 0.02


def test_generated_concept_drift_is_flagged(champion):
    # at concept 0.5 fraud falls to ~1.3%, 26 frauds a window: one window in ten has fewer than 20 and is not judged
    checks = generated_checks(champion, 100, Shift(concept=0.5), first_seed=2000)
    judged = [c for c in checks if c.judged]
    print(f"\nconcept drift 0.5 flagged: {rates(checks)}")
    assert len(judged) >= 85 and np.mean([c.concept_drift for c in judged]) >= 0.95
    assert np.mean([c.concept_drift for c in checks]) >= 0.85


SLOPE, BIAS = 2.0, -3.0  # P(y=1 | x) = sigmoid(2x - 3), x ~ N(0, 1): about 13% positives
THRESHOLD = 0.7 * (np.log(0.4 / 0.6) - BIAS) / SLOPE + 0.2  # the score of P(y=1) = 0.4


def simulated(seed: int, truth_slope: float = SLOPE, truth_bias: float = BIAS) -> list[tuple[str, float]]:
    """A window of 2,000 (label, score) pairs: the score 0.7x + 0.2, its calibrated probability sigmoid(2x - 3) exact
    unless the labels follow another slope and bias (concept drift)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=2000)
    labels = rng.random(2000) < expit(truth_slope * x + truth_bias)
    return [(str(y), s) for y, s in zip(labels, 0.7 * x + 0.2)]


@pytest.fixture(scope="module")
def exact() -> SimpleNamespace:
    """A model whose calibrator maps its score back to the true probability."""
    calibrator = SimpleNamespace(apply=lambda score: expit(SLOPE * (np.asarray(score) - 0.2) / 0.7 + BIAS))
    return SimpleNamespace(task="binary", classes=[False, True], threshold=THRESHOLD, calibrator=calibrator)


def test_a_simulated_change_of_p_y_given_x_is_flagged(exact):
    calm = [check_assumptions(exact, simulated(seed), seed=seed) for seed in range(50)]  # 100 more: the generated test
    # a weaker relation at about the same positive rate: the scores look alike, the labels follow them less
    drifted = [check_assumptions(exact, simulated(1000 + seed, 1.2, -2.6), seed=seed) for seed in range(50)]
    print(f"\nsimulated, calm: {rates(calm)}\nsimulated, p(y|x) weaker: {rates(drifted)}")
    assert np.mean([c.concept_drift for c in calm]) <= 0.02
    assert np.mean([c.concept_drift for c in drifted]) >= 0.9


def test_the_realised_metrics_are_mlray_quality_s(exact):
    for seed in range(3):
        pairs = simulated(seed, 1.2, -2.6)
        labels, scores = np.array([y == "True" for y, _ in pairs], int), np.array([s for _, s in pairs])
        expected = binary_metrics(labels, scores, THRESHOLD)
        found = check_assumptions(exact, pairs, seed=seed).metrics
        assert {m: found[m]["realised"] for m in METRICS} == pytest.approx({m: expected[m] for m in METRICS})


def test_each_band_holds_the_estimate_between_the_joint_and_the_bonferroni_level(exact):
    check = check_assumptions(exact, simulated(7), seed=7)
    assert check.judged and 1 - 0.01 < check.level <= 1 - 0.01 / 5 + 1e-3 and check.rows == 2000
    assert set(check.metrics) == set(METRICS)
    for metric, found in check.metrics.items():
        assert found["low"] <= found["estimated"] <= found["high"], metric
        assert (metric in check.outside) == (not found["low"] <= found["realised"] <= found["high"])
    assert check.to_dict()["metrics"] == check.metrics


def test_what_cannot_be_judged_says_why(exact):
    few = [("True", 0.9)] * 19 + [("False", 0.1)] * 500
    check = check_assumptions(exact, few)
    assert not check.judged and "fewer than 20" in check.reason and check.positives < 20 and not check.concept_drift
    assert check_assumptions(exact, few, min_class_labels=5).judged
    noisy = simulated(4) + [("maybe", 0.9), ("TRUE", None), ("false", float("nan"))]
    assert check_assumptions(exact, noisy).rows == 2000  # unknown labels and rows without a score are left out
    assert check_assumptions(exact, [("True", 0.9)] * 30 + [("FALSE", 0.1)] * 30).judged  # labels matched case aside
    regression = SimpleNamespace(task="regression", classes=[], threshold=0.5, calibrator=None)
    assert check_assumptions(regression, [("3.5", 3.1)]) == AssumptionCheck(
        reason="a regression model has no estimate to check")
    assert "no calibrator" in check_assumptions(SimpleNamespace(task="binary", calibrator=None), few).reason


MULTICLASS_METRICS = ("accuracy", "precision", "recall", "roc_auc")


def multiclass_window(seed: int, relabelled: float = 0.0) -> list[tuple[str, list[float]]]:
    """2,000 (label, served class probabilities) pairs of the three-class world; `relabelled`: that share of rows
    takes a label drawn uniformly at random instead (p(y|x) flattens: concept drift at nearly the same shares)."""
    y, probabilities = multiclass_rows(2000, [0.6, 0.3, 0.1], seed=seed)
    rng = np.random.default_rng(10_000 + seed)
    y = np.where(rng.random(len(y)) < relabelled, rng.integers(0, 3, len(y)), y)
    return [("abc"[label], list(p)) for label, p in zip(y, probabilities)]


def test_a_multiclass_model_s_estimates_are_checked_against_its_labels():
    champion = multiclass_champion()  # its calibrator fitted on 20,000 validation rows, as training does
    calm = [check_assumptions(champion, multiclass_window(seed), seed=seed) for seed in range(50)]
    drifted = [check_assumptions(champion, multiclass_window(500 + seed, relabelled=0.1), seed=seed)
               for seed in range(30)]
    print(f"\nmulticlass ({champion.calibrator.method} calibration), calm: "
          f"{np.mean([c.concept_drift for c in calm]):.1%}; 10% relabelled: {np.mean([c.concept_drift for c in drifted]):.1%}")
    assert all(c.judged and set(c.metrics) == set(MULTICLASS_METRICS) for c in calm + drifted)
    assert np.mean([c.concept_drift for c in calm]) <= 0.02
    assert np.mean([c.concept_drift for c in drifted]) >= 0.9


def test_a_multiclass_check_s_realised_metrics_are_mlray_quality_s():
    pairs = multiclass_window(3, relabelled=0.15)
    # and a window whose model never calls c: a class never predicted has no precision (mlray.quality's definition)
    never_c = [(y, [p[0] / (p[0] + p[1]), p[1] / (p[0] + p[1]), 0.0]) for y, p in pairs]
    for window in (pairs, never_c):
        labels, probabilities = np.array(["abc".index(y) for y, _ in window]), np.array([p for _, p in window])
        found = check_assumptions(multiclass_champion(), window, seed=3)
        expected = label_metrics(labels.tolist(), probabilities.argmax(axis=1).tolist()) | {
            "roc_auc": roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")}
        assert {m: found.metrics[m]["realised"] for m in MULTICLASS_METRICS} == pytest.approx(expected)
        assert found.per_class == dict(zip("abc", np.bincount(labels).tolist())) and found.rows == 2000


def test_what_a_multiclass_check_leaves_out_or_cannot_judge():
    champion, pairs = multiclass_champion(), multiclass_window(4)
    odd = [("A", pairs[0][1]), ("d", pairs[1][1]), ("b", None), ("b", [0.5, 0.5]), ("c", [0.2, float("nan"), 0.8]),
           ("c", [0.7, 0.7, 0.1])]
    check = check_assumptions(champion, pairs + odd, seed=4)
    assert check.judged and check.rows == 2001  # the label "A" counts as class a; the rest are left out
    rare_c = [(y, p) for y, p in pairs if y != "c"] + [(y, p) for y, p in pairs if y == "c"][:3]
    assert check_assumptions(champion, rare_c, seed=4).per_class["c"] == 3  # a rare class still lets it judge
    only_a = [(y, p) for y, p in pairs if y == "a"] + [(y, p) for y, p in pairs if y == "b"][:19]
    check = check_assumptions(champion, only_a, seed=4)
    assert not check.judged and check.reason == "fewer than two classes with 20 labels" and check.per_class["b"] == 19
    assert check_assumptions(champion, only_a, seed=4, min_class_labels=19).judged
    older = [(y, None) for y, _ in pairs]  # labels of rows an older mlray logged without their probabilities
    assert check_assumptions(champion, older).reason == "no labelled row carries the class probabilities it was served with"
    assert "no calibrator" in check_assumptions(SimpleNamespace(**vars(champion) | {"calibrator": None}), pairs).reason
