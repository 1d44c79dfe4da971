"""The rollout analysis: each cause of a failed step, a passing step, waiting for data, and what an always-valid check
says (its status from the sequential decision, its bounds, its share of alpha)."""

import json
import random

import numpy as np
import pytest

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
    erring, more = records(2, error_every=5, prefix="b")  # 20% of 200 against none: always-valid evidence at α 0.01
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
    assert [c.status for c in analysis.checks] == ["undecided", "pass", "pass", "skipped"]  # 0/200 vs 0/200 errors:
    assert analysis.verdict == "pass" and analysis.undecided == ["error_rate"]  # not yet within 2 points at α 0.01
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
    """120 labelled rows each, one fraud each: the champion caught its fraud, the challenger missed its own. One row
    cannot tell the two apart, so live precision and recall compare the classes both versions predicted and met
    min_class_labels times (here: legitimate payments) and the step passes; a sample with enough frauds is compared."""
    from mlray.rollout.analysis import live_metrics

    def logged(answers, truths, prefix):
        rows = [{"request_id": f"{prefix}{i}", "row": 0, "prediction": json.dumps(a), "score": 0.9 if a else 0.1,
                 "latency_ms": 5.0, "error": None} for i, a in enumerate(answers)]
        return rows, {(f"{prefix}{i}", 0): str(t) for i, t in enumerate(truths)}

    truths = [True] + [False] * 119
    champion, labels = logged(truths, truths, "a")
    challenger, more = logged([False] * 120, truths, "b")
    analysis = analyze(champion, challenger, labels | more, CHECKS, 50)
    assert analysis.verdict == "pass", analysis.to_dict()
    assert "over false" in {c.name: c.detail for c in analysis.checks}["live_recall_drop"]
    assert live_metrics([(False, str(t)) for t in truths]) == {"accuracy": 119 / 120, "precision": 119 / 120,
                                                                "recall": 0.5}  # unfiltered, the miss shows
    truths = [True] * 20 + [False] * 100  # twenty frauds each: the challenger's misses are now evidence
    champion, labels = logged(truths, truths, "a")
    challenger, more = logged([False] * 120, truths, "b")
    assert verdict_and_failed(champion, challenger, labels | more)[1] == [
        "live_accuracy_drop", "live_precision_drop", "live_recall_drop"]  # its "no" answers are wrong 1 in 6


def answered(n: int, errors: int, latency: float = 10.0):
    from mlray.rollout.analysis import Traffic

    rng = np.random.default_rng(n + errors)
    return Traffic(n, errors, latency * (1 + 0.2 * rng.random(n - errors)), rng.normal(0.3, 0.1, n - errors))


def test_an_always_valid_check_gives_its_counts_bounds_and_share_of_alpha():
    from mlray.rollout.analysis import judge

    def error_check(champion, challenger):
        return judge(champion, challenger, CHECKS, 50).checks[0]

    undecided = error_check(answered(3600, 2), answered(400, 3))
    assert undecided.status == "undecided" and undecided.always_valid and undecided.value == 3 / 400 - 2 / 3600
    assert undecided.detail.startswith("errors 3/400 vs champion 2/3600; Δ in [-")
    assert undecided.detail.endswith("] points, always-valid at α 0.01: undecided between 0 and the 2-point tolerance")
    worse = error_check(answered(3600, 36), answered(400, 40))  # 10% against 1%
    assert worse.status == "fail" and worse.detail.endswith("worse than the champion")
    equal = error_check(answered(20000, 200), answered(5000, 50))
    assert equal.status == "pass" and equal.detail.endswith("within the 2-point tolerance")
    slow = judge(answered(3600, 0), answered(400, 0, latency=30.0), CHECKS, 50).checks[1]
    assert (slow.name, slow.status) == ("p99_latency_ratio", "fail") and 2.9 < slow.value < 3.1  # p99s 36 and 12 ms
    assert "slower than that: 400/400 vs champion 36/3600" in slow.detail


def test_alpha_is_split_over_the_sequential_checks_in_force_and_regression_error_stays_a_plain_threshold():
    from mlray.rollout.analysis import alpha_per_check

    assert alpha_per_check(CHECKS, regression=False) == pytest.approx(0.01)  # errors, latency, accuracy, precision, recall
    assert alpha_per_check(CHECKS, regression=True) == pytest.approx(0.025)  # errors, latency

    def regression(prefix: str, noise: float, n: int = 200):
        rng = random.Random(noise)
        rows = [{"request_id": f"{prefix}{i}", "row": 0, "error": None, "latency_ms": 5.0, "score": 0.5,
                 "prediction": json.dumps(float(i) + rng.gauss(0, noise)), "shadow": False} for i in range(n)]
        return rows, {(f"{prefix}{i}", 0): str(float(i)) for i in range(n)}

    champion, labels = regression("a", 1.0)
    worse, more = regression("b", 1.5)  # its mean absolute error is half as large again
    analysis = analyze(champion, worse, labels | more, CHECKS, 50)
    checks = {c.name: c for c in analysis.checks}
    assert "α 0.025" in checks["error_rate"].detail
    mae = checks["live_mae_increase"]
    assert mae.status == "fail" and not mae.always_valid and mae.value > CHECKS.max_metric_drop
    assert analysis.action(step_over=False) == "wait" and analysis.action(step_over=True) == "fail"


def test_a_look_acts_on_sequential_evidence_at_once_on_plain_thresholds_at_the_steps_end_and_waits_for_data():
    from mlray.rollout.analysis import Analysis, Check

    def look(*statuses: tuple[str, bool]) -> Analysis:
        return Analysis([Check(f"c{i}", status, 0.1, 0.05, always_valid=valid)
                         for i, (status, valid) in enumerate(statuses)], 100, 100)

    assert look(("fail", True), ("pass", False)).action(step_over=False) == "fail"  # evidence of harm: at once
    assert look(("pass", True), ("fail", False)).action(step_over=False) == "wait"  # a threshold: at the step's end
    assert look(("pass", True), ("fail", False)).action(step_over=True) == "fail"
    assert look(("undecided", True), ("pass", False)).action(step_over=True) == "advance"  # undecided does not hold
    assert look(("undecided", True), ("pass", False)).action(step_over=False) == "wait"  # a step lasts its interval
    assert look(("waiting", True), ("pass", False)).action(step_over=True) == "wait"  # missing data does
    assert look(("fail", True), ("fail", False)).failing(step_over=False)[0].name == "c0"


def test_tallies_add_up_so_a_replay_may_cumulate_them():
    from mlray.rollout.analysis import Traffic, judge

    champion, labels = records(1, n=300, prefix="a")
    challenger, more = records(2, n=300, error_every=7, prefix="b")
    labels |= more
    whole = analyze(champion, challenger, labels, CHECKS, 50).to_dict()
    tallied = [Traffic.of(rows[:120], labels) + Traffic.of(rows[120:], labels) for rows in (champion, challenger)]
    assert judge(*tallied, CHECKS, 50).to_dict() == whole


def test_a_macro_metric_is_compared_on_effective_counts():
    from mlray.rollout.analysis import _effective_counts

    assert _effective_counts([(45, 50)]) == (45, 50)  # one class: its own counts
    hits, rows = _effective_counts([(90, 100), (9, 10)])  # a rare class weighs as much as a common one
    assert hits / rows == pytest.approx(0.9, abs=0.02) and 10 < rows < 40  # its variance is mostly the rare class's
    assert _effective_counts([(100, 100), (100, 100)])[1] <= 200  # never more rows than there are


def test_alpha_must_be_a_probability():
    from pydantic import ValidationError

    for wrong in (0, 1, 1.5):
        with pytest.raises(ValidationError, match="alpha"):
            RolloutChecks(alpha=wrong)
