"""The monitor's pure parts: the retraining policy, window boundaries, live quality and the monitor spec."""

from datetime import datetime, timedelta, timezone

import pytest

from mlray.errors import UserError
from mlray.monitor.live import LiveQuality, quality_drop, task_quality
from mlray.monitor.policy import decide
from mlray.monitor.windows import window_end
from mlray.spec import MonitorSpec, parse_spec, starter_spec
from mlray.spec.monitor import RetrainSpec

NOW = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
RULES = RetrainSpec(min_drifted_features=2, drifted_windows=2, of_windows=3, cooldown="1h", max_per_day=2)


def window(seq, drifted=(), score_drift=False):
    return {"seq": seq, "drifted": list(drifted), "score_drift": score_drift, "quality_drop": None}


def test_m_of_n_drifted_windows_trigger_and_one_drifted_window_does_not():
    once = [window(0), window(1, ["amount", "country"]), window(2)]
    assert decide(RULES, once, None, NOW, [], None, False)[0] is None
    twice = [window(0, ["amount", "country"]), window(1), window(2, ["amount"], score_drift=True)]
    trigger, _ = decide(RULES, twice, None, NOW, [], None, False)
    assert trigger.cause == "drift" and trigger.evidence["windows"] == [0, 2]
    assert trigger.evidence["columns"] == ["amount", "country"]


def test_one_drifted_column_is_not_a_drifted_window_unless_the_score_moved():
    one_column = [window(i, ["amount"]) for i in range(3)]
    assert decide(RULES, one_column, None, NOW, [], None, False)[0] is None
    no_score_rule = RULES.model_copy(update={"on_score_drift": False})
    scores_only = [window(i, score_drift=True) for i in range(3)]
    assert decide(RULES, scores_only, None, NOW, [], None, False)[0].cause == "drift"
    assert decide(no_score_rule, scores_only, None, NOW, [], None, False)[0] is None


def test_an_open_incident_the_cooldown_and_the_daily_cap_hold_a_trigger_back():
    drifted = [window(i, ["amount", "country"]) for i in range(3)]
    assert "still open" in decide(RULES, drifted, None, NOW, [], "abc-w1", False)[1]
    assert "cooldown" in decide(RULES, drifted, None, NOW, [NOW - timedelta(minutes=30)], None, False)[1]
    earlier = [NOW - timedelta(hours=5), NOW - timedelta(hours=3)]
    assert "max_per_day 2" in decide(RULES, drifted, None, NOW, earlier, None, False)[1]
    assert decide(RULES, drifted, None, NOW, [NOW - timedelta(hours=25)] + earlier[1:], None, False)[0] is not None


def test_a_quality_drop_beyond_the_threshold_and_a_due_schedule_trigger():
    calm = [window(0), window(1)]
    assert decide(RULES, calm, 0.04, NOW, [], None, False)[0] is None
    assert decide(RULES, calm, 0.08, NOW, [], None, False)[0].cause == "quality"
    assert decide(RULES, calm, None, NOW, [], None, True)[0].cause == "schedule"


def test_a_prior_shift_counts_as_drift_unless_the_rules_say_not_and_an_estimated_drop_triggers():
    shifted = [window(i) | {"prior_shift": ["true"]} for i in range(3)]
    assert decide(RULES.model_copy(update={"on_prior_shift": False}), shifted, None, NOW, [], None, False)[0] is None
    trigger, _ = decide(RULES, shifted, None, NOW, [], None, False)  # on by default: matched to the window's hours
    assert trigger.cause == "drift" and trigger.evidence["windows"] == [0, 1, 2] and "class shares moved in 3" in trigger.detail
    estimated = [window(0), window(1) | {"estimated_drop": 0.09}]
    assert decide(RULES, estimated, None, NOW, [], None, False)[0] is None  # max_estimated_drop is off by default
    watching = RULES.model_copy(update={"max_estimated_drop": 0.05})
    trigger, _ = decide(watching, estimated, None, NOW, [], None, False)
    assert trigger.cause == "estimated_quality" and trigger.evidence == {"estimated_drop": 0.09, "windows": [1]}
    assert decide(watching, [window(0) | {"estimated_drop": 0.03}], None, NOW, [], None, False)[0] is None


MONITOR = MonitorSpec(window_rows=100, window="10m", min_window_rows=20)
GRACE = timedelta(seconds=5)


def times(count, start=NOW, every=timedelta(seconds=1)):
    return [start + i * every for i in range(count)]


def test_a_window_closes_on_rows_or_on_time_whichever_comes_first():
    assert window_end(times(99), NOW + timedelta(minutes=1), MONITOR, GRACE) is None
    assert window_end(times(150), NOW + timedelta(minutes=1), MONITOR, GRACE) == 100
    spread = times(60, every=timedelta(seconds=20))  # row 30 comes 10 minutes after the first
    assert window_end(spread, NOW + timedelta(minutes=30), MONITOR, GRACE) == 30


def test_a_window_past_its_time_waits_for_min_rows_and_for_late_flushes():
    assert window_end(times(10), NOW + timedelta(hours=1), MONITOR, GRACE) is None  # too few rows: it waits
    assert window_end(times(25), NOW + timedelta(hours=1), MONITOR, GRACE) == 25
    assert window_end(times(25), NOW + timedelta(minutes=10, seconds=2), MONITOR, GRACE) is None  # within the grace
    sparse = times(40, every=timedelta(minutes=1))  # 10 rows in the first 10 minutes: it takes min_window_rows
    assert window_end(sparse, NOW + timedelta(hours=2), MONITOR, GRACE) == 20


def test_live_quality_counts_a_label_once_and_scores_binary_predictions():
    live = LiveQuality(rows=50)
    assert live.add("1", "r1:0", "True", "true", 0.9) is True
    assert live.add("1", "r1:0", "True", "true", 0.9) is False  # the same feedback again
    assert live.add("1", "r2:0", "False", None, None) is False  # a failed call has nothing to compare
    for i in range(20):
        live.add("1", f"a{i}:0", "True" if i % 2 else "False", "true" if i % 2 else "false", 0.8 if i % 2 else 0.1)
    metrics = live.metrics("binary", [False, True], 0.5, min_labels=10)["1"]
    assert metrics["roc_auc"] == 1.0 and metrics["precision"] == 1.0 and metrics["recall"] == 1.0
    assert live.metrics("binary", [False, True], 0.5, min_labels=100) == {}
    restored = LiveQuality(rows=50, saved=live.to_state())
    assert restored.counts() == live.counts()


def test_binary_live_quality_waits_for_enough_labels_of_each_class_and_carries_its_noise():
    rare = [("True", "true", 0.9)] * 3 + [("False", "false", 0.1)] * 200
    assert task_quality("binary", [False, True], 0.5, rare, min_class_labels=5) == {}
    enough = ([("True", "true", 0.9)] * 5 + [("True", "false", 0.3)] * 5 + [("False", "false", 0.1)] * 190
              + [("False", "false", 0.4)] * 10)
    found = task_quality("binary", [False, True], 0.5, enough, min_class_labels=5)
    assert found["recall"] == 0.5 and found["recall_se"] == pytest.approx((0.25 / 10) ** 0.5)
    assert found["roc_auc"] < 1 and 0 < found["roc_auc_se"] < 0.1


def test_live_quality_of_multiclass_and_regression_and_the_drop_against_offline():
    multi = task_quality("multiclass", ["a", "b", "c"], 0.5, [("a", '"a"', 0.9), ("b", '"a"', 0.6), ("c", '"c"', 0.7)])
    assert multi["accuracy"] == pytest.approx(2 / 3)
    regression = task_quality("regression", [], 0.5, [("1.0", "2.0", 2.0), ("3.0", "3.0", 3.0)])
    assert regression["mae"] == pytest.approx(0.5)
    assert quality_drop({"roc_auc": 0.70}, {"roc_auc": 0.90}, "roc_auc") == pytest.approx(0.20)
    # a drop counts beyond twice the live metric's standard error
    assert quality_drop({"roc_auc": 0.80, "roc_auc_se": 0.03}, {"roc_auc": 0.90}, "roc_auc") == pytest.approx(0.04)
    assert quality_drop({"rmse": 1.5}, {"rmse": 1.0}, "rmse") == pytest.approx(0.5)  # errors: a relative rise
    assert quality_drop({}, {"roc_auc": 0.9}, "roc_auc") is None


@pytest.mark.parametrize("section, message", [
    ("{retrain: {drifted_windows: 4, of_windows: 3}}", "drifted_windows (4) cannot exceed of_windows (3)"),
    ("{alert_webhook: 'ftp://x'}", "expected an http:// or https:// URL"),
    ("{retrain: {quality_metric: auc}}", "expected one of roc_auc"),
    ("{window: soon}", "expected a duration"),
    ("{retrain: {mode: later}}", "monitor.retrain.mode"),
    ("{columns: [colour]}", "'colour' is not a feature's column"),
    ("{columns: [amount, event_time]}", "'event_time' is a timestamp: time always moves"),
])
def test_a_bad_monitor_section_is_one_line_naming_the_key(section, message):
    with pytest.raises(UserError, match="monitor") as error:
        parse_spec(starter_spec() + f"\nmonitor: {section}\n")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_labels_outside_the_estimate_count_as_drift_only_when_the_rules_say_so():
    outside = [window(i) | {"concept_drift": True} for i in range(3)]
    assert decide(RULES, outside, None, NOW, [], None, False)[0] is None  # off by default
    trigger, _ = decide(RULES.model_copy(update={"on_concept_drift": True}), outside, None, NOW, [], None, False)
    assert trigger.cause == "drift" and "labels outside the estimate in 3" in trigger.detail
