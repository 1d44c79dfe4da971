"""Score divergence from the champion is evidence, not a veto.

The case behind it: a drift incident (three input columns scaled by 1.3) triggered retraining; the retrained challenger
beat the champion offline, yet the canary rolled it back: "2 failed analyses; last: score_divergence 0.3975 > 0.25". A
model retrained because the world moved is meant to score differently. Here the world is synthetic (numpy): the same
requests reach both versions (as in the shadow step), the champion reads the scaled columns with the weights it learned
before the drift, the retrained challenger reads them as the world now means them.
"""

import json

import numpy as np
import pytest

from mlray.rollout.analysis import Compared, analyze, divergence_check
from mlray.spec import RolloutChecks

CHECKS = RolloutChecks(max_error_rate=0.02, max_p99_latency_ratio=1.5, max_divergence=0.25, max_metric_drop=0.05,
                       min_labels=30)
INCIDENT = "e1a2-w7"
SCALE = 1.3


def drifted_world(n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Three input columns, scaled by 1.3 upstream; the truth still follows the unscaled quantity."""
    rng = np.random.default_rng(seed)
    z = rng.normal(loc=1.0, size=(n, 3))
    truth = z.sum(axis=1) + rng.normal(scale=0.5, size=n) > 3.0
    return z * SCALE, truth


def served(inputs: np.ndarray, truth: np.ndarray, prefix: str, reads_as: float = 1.0, cut: float = 3.0):
    """Inference-log records of a logistic model over the columns' sum (divided by `reads_as`), and their labels."""
    scores = 1 / (1 + np.exp(-2 * ((inputs / reads_as).sum(axis=1) - cut)))
    rows = [{"request_id": f"{prefix}{i}", "row": 0, "error": None, "latency_ms": 10.0, "score": float(s),
             "prediction": json.dumps(bool(s > 0.5)), "shadow": False} for i, s in enumerate(scores)]
    return rows, {(f"{prefix}{i}", 0): str(bool(t)) for i, t in enumerate(truth)}


@pytest.fixture
def world():
    inputs, truth = drifted_world()
    champion, champion_labels = served(inputs, truth, "a")  # its weights are from before the drift
    retrained, retrained_labels = served(inputs, truth, "b", reads_as=SCALE)  # learned the world as it is now
    return champion, champion_labels, retrained, retrained_labels


def divergence(analysis):
    return next(c for c in analysis.checks if c.name == "score_divergence")


def test_the_case_replayed_a_retrained_challenger_the_labels_show_right_passes_and_says_why(world):
    champion, champion_labels, retrained, retrained_labels = world
    analysis = analyze(champion, retrained, champion_labels | retrained_labels, CHECKS, 50, incident=INCIDENT)
    check = divergence(analysis)
    assert check.value > CHECKS.max_divergence  # it scores unlike the champion, as it should
    assert analysis.verdict == "pass" and analysis.failed == []
    assert check.status == "noted" and check.decided_by == "incident"
    [note] = analysis.notes
    assert note.startswith(f"score_divergence {check.value:.2f} > 0.25 noted: answers incident {INCIDENT}; live accuracy")
    assert ">= champion" in note
    recorded = analysis.to_dict()
    assert recorded["verdict"] == "pass" and recorded["incident"] == INCIDENT and recorded["evidence"] == [note]
    # live quality at least the champion's outranks divergence on its own too, incident or not
    alone = analyze(champion, retrained, champion_labels | retrained_labels, CHECKS, 50)
    assert alone.verdict == "pass" and divergence(alone).decided_by == "labels" and "incident" not in alone.notes[0]


def test_answering_an_incident_without_labels_yet_is_no_failure(world):
    champion, champion_labels, retrained, _ = world
    analysis = analyze(champion, retrained, champion_labels, CHECKS, 50, incident=INCIDENT)  # no challenger labels
    check = divergence(analysis)
    assert check.value > CHECKS.max_divergence and check.status == "noted" and check.decided_by == "incident"
    assert analysis.verdict == "pass" and f"answers incident {INCIDENT}; no labels yet" in analysis.notes[0]
    strict = CHECKS.model_copy(update={"require_labels": True})  # a spec that waits for labels still waits
    assert analyze(champion, retrained, champion_labels, strict, 50, incident=INCIDENT).verdict == "waiting"


def test_divergence_with_no_incident_and_no_labels_fails_as_before(world):
    champion, champion_labels, retrained, _ = world
    analysis = analyze(champion, retrained, champion_labels, CHECKS, 50)
    assert analysis.verdict == "fail" and [c.name for c in analysis.failed] == ["score_divergence"]
    check = divergence(analysis)
    assert check.decided_by == "threshold" and "no incident" in check.detail and analysis.notes == []


@pytest.mark.parametrize("incident", [None, INCIDENT])
def test_a_challenger_worse_on_labels_fails_on_its_live_quality_incident_or_not(world, incident):
    """The labels judge it through the live-quality checks and their tolerance; divergence is not what fails it."""
    champion, champion_labels, _, _ = world
    inputs, truth = drifted_world()
    # retrained, but it misses positives: live recall about 0.2 lower, evidence enough on 400 labels each at α 0.01
    worse, worse_labels = served(inputs, truth, "b", reads_as=SCALE, cut=5.0)
    analysis = analyze(champion, worse, champion_labels | worse_labels, CHECKS, 50, incident=incident)
    check = divergence(analysis)
    assert check.value > CHECKS.max_divergence and "< champion" in check.detail
    assert analysis.verdict == "fail" and "live_recall_drop" in [c.name for c in analysis.failed]
    assert check.status == ("noted" if incident else "fail")


def test_labels_must_show_the_challenger_at_least_as_good_on_every_metric_compared():
    better, slightly_worse = Compared("accuracy", 0.88, 0.91), Compared("recall", 0.90, 0.89)
    assert divergence_check(0.40, 0.25, [better], None).status == "noted"
    mixed = divergence_check(0.40, 0.25, [better, slightly_worse], None)
    assert mixed.status == "fail" and "live recall 0.890 < champion 0.900" in mixed.detail
    assert divergence_check(0.40, 0.25, [better, slightly_worse], INCIDENT).status == "noted"
    mae = Compared("mae", 2.0, 1.5, lower_is_better=True)  # regression: a lower error is better
    assert divergence_check(0.40, 0.25, [mae], None).detail == "live mae 1.500 <= champion 2.000"
    assert divergence_check(0.10, 0.25, [], None).status == "pass"
    assert divergence_check(None, 0.25, [], INCIDENT).status == "waiting"


def test_before_labels_the_estimates_of_both_versions_can_explain_a_divergence_but_labels_outrank_them():
    better = [Compared("roc_auc", 0.86, 0.90, source="estimated"), Compared("recall", 0.50, 0.55, source="estimated")]
    noted = divergence_check(0.40, 0.25, [], None, better)
    assert noted.status == "noted" and noted.decided_by == "estimates"
    assert noted.detail == "estimated roc_auc 0.900 >= champion 0.860, estimated recall 0.550 >= champion 0.500"
    worse = [Compared("roc_auc", 0.86, 0.80, source="estimated")]
    assert divergence_check(0.40, 0.25, [], None, worse).status == "fail"
    labelled_worse = [Compared("precision", 0.9, 0.7)]
    assert divergence_check(0.40, 0.25, labelled_worse, None, better).status == "fail"
