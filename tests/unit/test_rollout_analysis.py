"""The rollout analysis: each cause of a failed step, a passing step, and waiting for data."""

import json
import random

from mlray.audit import AuditLog
from mlray.rollout.analysis import analyze, population_stability
from mlray.spec import RolloutChecks

CHECKS = RolloutChecks(max_error_rate=0.02, max_p99_latency_ratio=1.5, max_divergence=0.25, max_metric_drop=0.05,
                       min_labels=30)


def records(version_seed: int, n: int = 200, error_every: int = 0, latency: float = 10.0, shift: float = 0.0,
            accuracy: float = 0.9, prefix: str = "r"):
    rng = random.Random(version_seed)
    out, labels = [], {}
    for i in range(n):
        truth = rng.random() < 0.5
        correct = rng.random() < accuracy
        predicted = truth if correct else not truth
        score = min(max(rng.gauss(0.3 + shift, 0.1), 0), 1)
        failed = bool(error_every) and i % error_every == 0
        out.append({"request_id": f"{prefix}{i}", "row": 0, "error": "RuntimeError" if failed else None,
                    "latency_ms": latency * (1 + rng.random() * 0.2), "score": None if failed else score,
                    "prediction": None if failed else json.dumps(predicted), "shadow": False})
        labels[(f"{prefix}{i}", 0)] = str(truth)
    return out, labels


def verdict_and_failed(champion, challenger, labels, min_requests=50):
    analysis = analyze(champion, challenger, labels, CHECKS, min_requests)
    return analysis.verdict, [c.name for c in analysis.failed]


def test_a_good_challenger_passes_every_check():
    champion, labels = records(1, prefix="a")
    challenger, more = records(2, prefix="b")
    assert verdict_and_failed(champion, challenger, labels | more) == ("pass", [])


def test_each_cause_fails_the_step_on_its_own():
    champion, labels = records(1, prefix="a")
    erring, more = records(2, error_every=10, prefix="b")
    assert verdict_and_failed(champion, erring, labels | more) == ("fail", ["error_rate"])
    slow, more = records(2, latency=40.0, prefix="b")
    assert verdict_and_failed(champion, slow, labels | more) == ("fail", ["p99_latency_ratio"])
    worse, more = records(2, accuracy=0.6, prefix="b")
    assert verdict_and_failed(champion, worse, labels | more) == (
        "fail", ["live_accuracy_drop", "live_precision_drop", "live_recall_drop"])
    drifted, _ = records(2, shift=0.4, prefix="b")  # no incident behind it, no labels of its own: divergence decides
    assert verdict_and_failed(champion, drifted, labels) == ("fail", ["score_divergence"])


def test_too_little_traffic_or_feedback_waits():
    champion, labels = records(1, prefix="a")
    challenger, more = records(2, n=20, prefix="b")
    assert verdict_and_failed(champion, challenger, labels | more)[0] == "waiting"
    challenger, _ = records(2, prefix="b")
    analysis = analyze(champion, challenger, {}, CHECKS, 50)  # no labels yet: accuracy is skipped, the step passes
    assert analysis.verdict == "pass" and [c.status for c in analysis.checks] == ["pass"] * 3 + ["skipped"]
    strict = CHECKS.model_copy(update={"require_labels": True})  # unless labels are required: then it waits
    assert analyze(champion, challenger, {}, strict, 50).verdict == "waiting"


def test_live_quality_sees_a_model_that_always_says_yes_and_regression_error():
    from mlray.rollout.analysis import live_metrics

    truths = [True] * 10 + [False] * 90
    always_yes = live_metrics([(True, str(t)) for t in truths])
    assert always_yes == {"accuracy": 0.1, "precision": 0.1, "recall": 0.5}  # it never said no: no precision for no
    perfect = live_metrics([(t, str(t)) for t in truths])
    assert perfect == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0}
    assert live_metrics([(1.5, "1.0"), (2.0, "3.0")]) == {"mae": 0.75}


def test_psi_is_zero_for_one_distribution_and_grows_with_shift():
    rng = random.Random(0)
    base = [rng.gauss(0, 1) for _ in range(5000)]
    import numpy as np

    assert population_stability(np.array(base), np.array(base)) < 1e-9
    assert population_stability(np.array(base), np.array(base) + 1) > 0.5


def test_the_audit_log_appends_and_reads_newest_first(tmp_path):
    from mlray.spec import PlatformSpec

    audit = AuditLog(PlatformSpec(state_dir=str(tmp_path)))
    audit.append("deploy", "m", "first", None, {"weights": {"1": 1.0}}, component="cli")
    audit.append("canary.promote", "m v2", "every step passed", component="controller")
    entries = audit.read()
    assert [e["action"] for e in entries] == ["canary.promote", "deploy"] and entries[1]["after"] == {"weights": {"1": 1.0}}
    assert audit.read(action="deploy")[0]["reason"] == "first"


def test_a_rare_class_met_once_in_a_small_sample_does_not_decide_the_step():
    """30 labelled rows each, one fraud each: the champion caught its fraud, the challenger missed its own. One row
    cannot tell the two apart, so live precision and recall compare the classes both versions predicted and met
    min_class_labels times (here: legitimate payments) and the step passes; a sample with enough frauds is compared."""
    from mlray.rollout.analysis import live_metrics

    def logged(answers, truths, prefix):
        rows = [{"request_id": f"{prefix}{i}", "row": 0, "prediction": json.dumps(a), "score": 0.9 if a else 0.1,
                 "latency_ms": 5.0, "error": None} for i, a in enumerate(answers)]
        return rows, {(f"{prefix}{i}", 0): str(t) for i, t in enumerate(truths)}

    truths = [True] + [False] * 59
    champion, labels = logged(truths, truths, "a")
    challenger, more = logged([False] * 60, truths, "b")
    analysis = analyze(champion, challenger, labels | more, CHECKS, 50)
    assert analysis.verdict == "pass", analysis.to_dict()
    assert "over false" in {c.name: c.detail for c in analysis.checks}["live_recall_drop"]
    assert live_metrics([(False, str(t)) for t in truths]) == {"accuracy": 59 / 60, "precision": 59 / 60,
                                                                "recall": 0.5}  # unfiltered, the miss shows
    truths = [True] * 10 + [False] * 50  # ten frauds each: the challenger's misses are now evidence
    champion, labels = logged(truths, truths, "a")
    challenger, more = logged([False] * 60, truths, "b")
    assert verdict_and_failed(champion, challenger, labels | more)[1] == [
        "live_accuracy_drop", "live_precision_drop", "live_recall_drop"]  # its "no" answers are wrong 1 in 6
