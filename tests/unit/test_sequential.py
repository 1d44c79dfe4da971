"""Always-valid sequential checks: no peeking penalty, power on fewer requests, equal versions pass, latency, quality.

Simulated rollouts look at the cumulative counts at every tick and act on the first decision that is not 'continue'.
The rate simulations run 2,000 rollouts (a share estimated on 200 has a standard error of ±1.5 points, too coarse to
tell a 3.5% false-fail rate from 5%); latency and quality run 500."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from mlray.rollout.sequential import (
    SequentialResult,
    compare_latency,
    compare_quality,
    compare_rates,
    fixed_horizon_n,
    latency_counts,
    rate_decisions,
)

ROLLOUTS, TICKS, PER_TICK, RATIO = 2000, 100, 50, 4  # challenger requests a tick; the champion gets RATIO× as many
ALPHA, TOLERANCE = 0.05, 0.01


def cumulative_counts(rng, p_champion: float, p_challenger: float, rollouts: int = ROLLOUTS, ticks: int = TICKS,
                      per_tick: int = PER_TICK, ratio: int = RATIO):
    """Cumulative bad events and requests of both arms at every tick: (rollouts, ticks) events, (ticks,) requests."""
    ticks_n = np.arange(1, ticks + 1)
    champion = rng.binomial(per_tick * ratio, p_champion, (rollouts, ticks)).cumsum(axis=1)
    challenger = rng.binomial(per_tick, p_challenger, (rollouts, ticks)).cumsum(axis=1)
    return champion, per_tick * ratio * ticks_n, challenger, per_tick * ticks_n


def first_decisions(decisions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each rollout's first decision that is not 'continue' ('continue' if none) and its tick (the horizon if none)."""
    decided = decisions != "continue"
    tick = np.where(decided.any(axis=1), decided.argmax(axis=1), decisions.shape[1])
    first = np.where(tick < decisions.shape[1], decisions[np.arange(len(decisions)), np.minimum(tick, decisions.shape[1] - 1)],
                     "continue")
    return first, tick


def naive_z_rejects(champion, champion_n, challenger, challenger_n) -> np.ndarray:
    """A one-sided pooled two-proportion z-test at α, as if each tick were the only look."""
    pooled = (champion + challenger) / (champion_n + challenger_n)
    se = np.sqrt(pooled * (1 - pooled) * (1 / champion_n + 1 / challenger_n))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (challenger / challenger_n - champion / champion_n) / se
    return np.nan_to_num(z) > norm.ppf(1 - ALPHA)


def test_equal_versions_are_rarely_failed_however_often_one_looks():
    counts = cumulative_counts(np.random.default_rng(11), 0.01, 0.01)
    decisions = rate_decisions(*counts, TOLERANCE, ALPHA)
    ever_fail = (decisions == "fail").any(axis=1).mean()
    naive = naive_z_rejects(*counts).any(axis=1).mean()
    threshold = (counts[2] / counts[3] > 0.02).any(axis=1).mean()  # today's check: challenger error rate > 2%
    print(f"\nequal versions (1% errors), {TICKS} looks: ever failed {ever_fail:.1%} (sequential, α={ALPHA}); "
          f"naive z-test at every tick {naive:.1%}; fixed 2% error-rate threshold at every tick {threshold:.1%}")
    assert ever_fail <= ALPHA


def test_a_challenger_with_twice_the_errors_is_failed_on_fewer_requests_than_a_fixed_horizon_test():
    counts = cumulative_counts(np.random.default_rng(12), 0.01, 0.02)
    first, tick = first_decisions(rate_decisions(*counts, TOLERANCE, ALPHA))
    failed, passed = (first == "fail").mean(), (first == "pass").mean()
    stop = np.where(first == "fail", (np.minimum(tick, TICKS - 1) + 1) * PER_TICK, np.inf)
    median = float(np.median(stop))
    same_allocation = fixed_horizon_n(0.01, 0.02, ALPHA, 0.8, ratio=RATIO)
    equal_arms = fixed_horizon_n(0.01, 0.02, ALPHA, 0.8)
    same_power = fixed_horizon_n(0.01, 0.02, ALPHA, failed, ratio=RATIO)
    print(f"\n1% -> 2% errors: failed {failed:.1%}, passed {passed:.1%} within {TICKS * PER_TICK} challenger requests; "
          f"median challenger requests at the fail {median:.0f}; a fixed-horizon one-sided z-test (α={ALPHA}) needs "
          f"{same_allocation} at power 80% and the same {RATIO}:1 split ({median / same_allocation:.2f}x), "
          f"{equal_arms} per arm at power 80% with equal arms ({median / equal_arms:.2f}x), "
          f"{same_power} at the sequential test's power {failed:.1%} ({median / same_power:.2f}x)")
    assert failed >= 0.8
    assert passed <= ALPHA  # worse by the tolerance: a pass is the error the pass rule bounds by α
    assert median <= 0.9 * same_allocation  # same split, same α, power 80%: about 0.8x, not 0.5x
    assert median <= 0.5 * same_power


def test_equal_versions_pass_within_the_horizon():
    counts = cumulative_counts(np.random.default_rng(13), 0.01, 0.01)
    first, tick = first_decisions(rate_decisions(*counts, TOLERANCE, ALPHA))
    passed = first == "pass"
    print(f"\nequal versions, tolerance {TOLERANCE:.0%}: passed {passed.mean():.1%} within {TICKS * PER_TICK} challenger "
          f"requests, median at {np.median((tick[passed] + 1) * PER_TICK):.0f}")
    assert passed.mean() >= 0.8


def test_compare_rates_decides_as_the_batch_form_and_as_its_bounds_say():
    rng = np.random.default_rng(14)
    champion, champion_n, challenger, challenger_n = cumulative_counts(rng, 0.01, 0.015, rollouts=30, ticks=60)
    decisions = rate_decisions(champion, champion_n, challenger, challenger_n, TOLERANCE, ALPHA)
    for r, t in zip(rng.integers(0, 30, 60), rng.integers(0, 60, 60)):
        result = compare_rates(int(champion[r, t]), int(champion_n[t]), int(challenger[r, t]), int(challenger_n[t]),
                               TOLERANCE, ALPHA)
        assert result.decision == decisions[r, t]
        assert result.decision == ("pass" if result.high < TOLERANCE else "fail" if result.low > 0 else "continue")
        assert result.low <= result.estimate <= result.high


LATENCY_ROLLOUTS, LATENCY_TICKS = 500, 40


def latency_first_decisions(slowdown: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Lognormal latencies (median 50 ms); every tick compares the cumulative latencies at 1.5x max p99 ratio."""
    rng = np.random.default_rng(seed)
    champion = rng.lognormal(np.log(50), 0.5, (LATENCY_ROLLOUTS, LATENCY_TICKS * PER_TICK * RATIO))
    challenger = slowdown * rng.lognormal(np.log(50), 0.5, (LATENCY_ROLLOUTS, LATENCY_TICKS * PER_TICK))
    decisions = np.empty((LATENCY_ROLLOUTS, LATENCY_TICKS), dtype=object)
    for t in range(LATENCY_TICKS):
        slow, n, challenger_slow, challenger_n, tolerance, _ = latency_counts(
            champion[:, :(t + 1) * PER_TICK * RATIO], challenger[:, :(t + 1) * PER_TICK], 1.5)
        decisions[:, t] = rate_decisions(slow, n, challenger_slow, challenger_n, tolerance, ALPHA)
    return decisions.astype(str), champion, challenger


def test_equal_latencies_are_rarely_failed_and_a_twice_slower_challenger_is():
    equal, champion, challenger = latency_first_decisions(1.0, 21)
    slower, _, _ = latency_first_decisions(2.0, 22)
    ever_fail = (equal == "fail").any(axis=1).mean()
    first, tick = first_decisions(slower)
    print(f"\nlatency, {LATENCY_TICKS} looks: equal versions ever failed {ever_fail:.1%}, passed "
          f"{(first_decisions(equal)[0] == 'pass').mean():.1%}; 2x slower failed {(first == 'fail').mean():.1%}, "
          f"median at {np.median((tick + 1) * PER_TICK):.0f} challenger requests")
    assert ever_fail <= ALPHA
    assert (first == "fail").mean() >= 0.9
    for r, t in [(0, 0), (1, 5), (2, LATENCY_TICKS - 1)]:  # the one-comparison form decides as the batch form
        result = compare_latency(champion[r, :(t + 1) * PER_TICK * RATIO], challenger[r, :(t + 1) * PER_TICK], 1.5)
        assert result.decision == equal[r, t]


def quality_decisions(accuracy_champion: float, accuracy_challenger: float, seed: int) -> np.ndarray:
    """Labels arrive 50 a tick per arm up to 2,000; misses are the bad events; max_metric_drop 0.05."""
    counts = cumulative_counts(np.random.default_rng(seed), 1 - accuracy_champion, 1 - accuracy_challenger,
                               rollouts=LATENCY_ROLLOUTS, ticks=40, ratio=1)
    return rate_decisions(*counts, 0.05, ALPHA), counts


def test_equal_accuracy_is_rarely_failed_and_a_drop_of_ten_points_is():
    equal, counts = quality_decisions(0.85, 0.85, 31)
    worse, _ = quality_decisions(0.85, 0.75, 32)
    ever_fail = (equal == "fail").any(axis=1).mean()
    first, tick = first_decisions(worse)
    print(f"\nlive accuracy 0.85, 40 looks up to 2,000 labels per arm: equal ever failed {ever_fail:.1%}; a 0.10 drop "
          f"failed {(first == 'fail').mean():.1%}, median at {np.median((tick + 1) * PER_TICK):.0f} labels")
    assert ever_fail <= ALPHA
    assert (first == "fail").mean() >= 0.9
    misses, n, challenger_misses, challenger_n = counts
    result = compare_quality(int(n[-1] - misses[0, -1]), int(n[-1]), int(challenger_n[-1] - challenger_misses[0, -1]),
                             int(challenger_n[-1]), 0.05)
    assert result.decision == equal[0, -1]
    assert "live accuracy" in result.detail


@pytest.mark.parametrize("counts", [(0, 0, 0, 0), (5, 100, 0, 0), (0, 0, 3, 10)])
def test_no_requests_continue(counts):
    result = compare_rates(*counts, TOLERANCE)
    assert result.decision == "continue" and result.estimate is None and result.detail
    assert compare_quality(*counts, 0.05).decision == "continue"
    assert rate_decisions(*counts, TOLERANCE) == "continue"


def test_no_latencies_or_too_few_for_a_p99_continue():
    assert compare_latency(np.array([]), np.array([]), 1.5).decision == "continue"
    assert compare_latency(np.full(50, 10.0), np.full(50, 100.0), 1.5).decision == "continue"


def test_an_all_error_challenger_on_ten_requests_gives_a_valid_result():
    for champion_n in (10, 1000):
        result = compare_rates(champion_n // 100, champion_n, 10, 10, TOLERANCE)
        assert isinstance(result, SequentialResult) and result.decision in ("fail", "pass", "continue")
        assert -1 <= result.low <= result.estimate <= result.high <= 1 and result.detail
    assert result.decision == "fail"  # 10 of 10 against 10 of 1,000 is evidence enough


def test_a_challenger_failing_every_request_is_failed_on_ten_requests_even_on_equal_arms():
    """The wide mixture's job: the one centred on a 2-point tolerance alone still hesitates at 50 requests a side."""
    assert compare_rates(0, 10, 10, 10, 0.02, 0.01).decision == "fail"
    assert compare_rates(0, 5, 5, 5, 0.02, 0.01).decision == "continue"  # five of five is not yet evidence at α 0.01
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("mlray.rollout.sequential.WIDE_SHARE", 1e-300)  # the narrow mixture alone, in effect
        assert compare_rates(0, 50, 50, 50, 0.02, 0.01).decision == "continue"


def test_the_audit_line_names_the_rates_the_bounds_and_the_rule():
    result = compare_rates(42, 4200, 22, 1050, TOLERANCE)
    assert result.decision == "fail"
    assert result.detail.startswith("fail: challenger error rate 2.10% of 1050 vs champion 1.00% of 4200: +1.10 pts")
    assert "always-valid 95% bounds [+0.04, +2.76]" in result.detail and "lower bound > 0" in result.detail


def test_fixed_horizon_n_has_the_power_it_claims():
    rng = np.random.default_rng(41)
    for ratio in (1, 4):
        n = fixed_horizon_n(0.01, 0.02, ratio=ratio)
        champion, challenger = rng.binomial(ratio * n, 0.01, 40_000), rng.binomial(n, 0.02, 40_000)
        power = naive_z_rejects(champion, ratio * n, challenger, n).mean()
        assert 0.78 <= power <= 0.83, (ratio, n, power)
    assert fixed_horizon_n(0.01, 0.02) == 1826
