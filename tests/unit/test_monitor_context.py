"""Seasonality is not drift: windows of a few hours' traffic compared with the reference rows of those hours (no Ray,
no registry; the real Alibi detectors on a hand-made reference whose amounts follow the hour of the day).

| behaviour | test |
|---|---|
| a window with the reference's mix keeps most of the reference | test_a_window_like_the_reference_keeps_most_of_it |
| an evening window is compared with evening rows, in its proportions | test_an_evening_window_is_compared_with_evening_rows |
| clean seasonal windows: false alarms without and with the context | test_clean_seasonal_windows_raise_no_... |
| a real shift in a seasonal window is still caught | test_a_real_shift_in_a_seasonal_window_is_still_... |
| hours the reference never saw: reported, not judged | test_a_window_of_hours_the_reference_never_saw_is_... |
| the spec's context: auto, none, named; a wrong column refused | test_the_context_comes_from_the_spec |
| the monitor builds its detectors with the spec's context | test_the_monitor_builds_its_detectors_with_the_context |
"""

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from mlray.errors import UserError
from mlray.features.fitted import FittedFeatures, FittedNumeric
from mlray.monitor.context import Context, context_of, match
from mlray.monitor.detectors import Detectors
from mlray.monitor.reference import ColumnEncoding, Reference, encode_columns
from mlray.spec import MonitorSpec, parse_spec

MONDAY = datetime(2026, 11, 30, tzinfo=timezone.utc)
HOUR_OF_DAY = Context("event_time", "hour_of_day")


def traffic(rows: int, seed: int, hours: tuple[int, ...] | None = None, shift: float = 0.0) -> pa.Table:
    """Payments whose log-amount follows the hour (evenings spend more); `hours`: only those hours of the day."""
    rng = np.random.default_rng(seed)
    hour = rng.choice(hours, rows) if hours else rng.integers(0, 24, rows)
    day = rng.integers(0, 7, rows)
    at = [MONDAY + timedelta(days=int(d), hours=int(h), minutes=int(m)) for d, h, m in
          zip(day, hour, rng.integers(0, 60, rows))]
    log_amount = 3.0 + 1.0 * np.sin(2 * np.pi * (hour - 12) / 24) + rng.normal(shift, 0.5, rows)
    return pa.table({"event_time": pa.array(at, pa.timestamp("us", tz="UTC")), "amount": np.exp(log_amount)})


def scores_of(table: pa.Table) -> np.ndarray:
    return 1 / (1 + np.exp(-(np.log(table.column("amount").to_numpy()) - 3)))


def reference(rows: int = 4000, hours: tuple[int, ...] | None = None) -> Reference:
    table = traffic(rows, seed=0, hours=hours)
    fitted = FittedFeatures(features=[FittedNumeric(name="amount", source="amount", log1p=True, mean=3.0, std=1.0)])
    encodings = [ColumnEncoding("amount", "numeric", fill=20.0)]
    return Reference("1", "binary", [False, True], 0.5, encodings, encode_columns(encodings, table), scores_of(table),
                     {"roc_auc": 0.9}, fitted, table)


def test_a_window_like_the_reference_keeps_most_of_it():
    ref = HOUR_OF_DAY.periods(traffic(4000, seed=0).column("event_time"))
    window = HOUR_OF_DAY.periods(traffic(500, seed=1).column("event_time"))
    matched = match(ref, window)
    assert matched.unseen == [] and matched.judged
    assert matched.window_rows.mean() >= 0.9 and len(matched.reference_rows) >= 1500


def test_an_evening_window_is_compared_with_evening_rows():
    ref = HOUR_OF_DAY.periods(traffic(4000, seed=0).column("event_time"))
    window = HOUR_OF_DAY.periods(traffic(500, seed=1, hours=(19, 20, 20, 21)).column("event_time"))
    matched = match(ref, window)
    chosen = ref[matched.reference_rows]
    assert set(chosen.tolist()) == {19, 20, 21} and len(chosen) == len(set(matched.reference_rows.tolist()))
    assert abs(np.mean(chosen == 20) - np.mean(window == 20)) < 0.05  # the window's proportions, each row once


def _alarms(context: Context | None, shift: float = 0.0, windows: int = 40) -> float:
    detectors = Detectors(reference(), MonitorSpec(p_value=0.01), context=context)
    flagged = 0
    for seed in range(windows):
        hours = (int(seed % 24), int((seed + 1) % 24), int((seed + 2) % 24))  # a few hours' traffic, as it arrives
        window = traffic(500, seed=100 + seed, hours=hours, shift=shift)
        result = detectors.check(window, scores_of(window))
        flagged += bool(result.drifted or result.score_drift)
    return flagged / windows


def test_clean_seasonal_windows_raise_no_alarm_with_the_context():
    without, with_context = _alarms(None), _alarms(HOUR_OF_DAY, windows=100)
    print(f"\nclean windows of three hours flagged: {without:.0%} against the whole reference, {with_context:.0%} "
          f"against the same hours")
    assert without >= 0.8  # the hour, not the world, moved
    assert with_context <= 0.05


def test_a_real_shift_in_a_seasonal_window_is_still_caught():
    caught = _alarms(HOUR_OF_DAY, shift=0.3)
    print(f"\nwindows of three hours with amounts moved 0.6 standard deviations: {caught:.0%} caught")
    assert caught >= 0.9


def test_a_window_of_hours_the_reference_never_saw_is_reported_not_judged():
    detectors = Detectors(reference(hours=tuple(range(8, 21))), MonitorSpec(p_value=0.01), context=HOUR_OF_DAY)
    window = traffic(300, seed=5, hours=(2, 3, 4))
    result = detectors.check(window, scores_of(window))
    assert not result.judged and result.drifted == [] and not result.score_drift
    assert result.context["unseen"] == ["02h", "03h", "04h"] and result.context["unseen_share"] == 1.0


def test_the_context_comes_from_the_spec(starter_text):
    assert context_of(parse_spec(starter_text)) == Context("event_time", "hour_of_day")  # auto: a feature takes the hour
    named = parse_spec(starter_text + "\nmonitor:\n  context: {column: event_time, period: hour_of_week}\n")
    assert context_of(named) == Context("event_time", "hour_of_week")
    assert context_of(parse_spec(starter_text + "\nmonitor:\n  context: none\n")) is None
    with pytest.raises(UserError, match="monitor.context.column: 'amount' is not a timestamp column a feature reads"):
        parse_spec(starter_text + "\nmonitor:\n  context: {column: amount}\n")
    assert Context("t", "hour_of_week").label(24 * 5 + 7) == "Sat 07h"


def test_the_monitor_builds_its_detectors_with_the_context(project):
    from monitor_fakes import FakeReferences, FakeServing

    from mlray.control.state import MonitorCheckpoint
    from mlray.lake import Lake
    from mlray.monitor.checks import WindowChecks

    built = []
    checks = WindowChecks(project, Lake.from_platform(project.platform), FakeServing("1"), None, FakeReferences(),
                          lambda reference, rules, **options: built.append(options) or SimpleNamespace(reference=reference))
    checks.reference(MonitorCheckpoint())
    assert built == [{"context": Context("event_time", "hour_of_day")}]


def test_a_check_names_the_reference_rows_its_scores_were_matched_with():
    """What the class shares and the segments are judged against: the same matched rows as the score test."""
    ref = reference()
    detectors = Detectors(ref, MonitorSpec(p_value=0.01), context=HOUR_OF_DAY)
    window = traffic(500, seed=7, hours=(19, 20, 21))
    answered = window.slice(0, 400)  # the champion answered these; the rest went to a challenger
    result = detectors.check(window, scores_of(answered), answered)
    assert len(result.scored_rows) == 400 and result.scored_rows.all()
    assert np.array_equal(result.reference_scores, ref.scores[result.matched_rows])
    matched_hours = set(HOUR_OF_DAY.periods(ref.sample.column("event_time"))[result.matched_rows].tolist())
    assert matched_hours == {19, 20, 21}
    unseen = Detectors(reference(hours=tuple(range(8, 18))), MonitorSpec(p_value=0.01), context=HOUR_OF_DAY)
    nothing = unseen.check(window, scores_of(window))
    assert not nothing.judged and nothing.reference_scores is None and nothing.matched_rows is None
    whole = Detectors(ref, MonitorSpec(p_value=0.01)).check(window, scores_of(window))
    assert whole.context is None and whole.matched_rows is None and np.array_equal(whole.reference_scores, ref.scores)
