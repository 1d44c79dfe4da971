"""Rollouts simulated tick by tick through the controller's decisions, on traffic cumulated since the rollout began:
equal versions are rarely rolled back however often the rollout looks, a challenger with twice the champion's errors
is, and one that fails every request is rolled back within a few ticks.

Every tick, each simulated rollout looks at its checks (error rate, p99 latency, and score divergence at a step's end;
no labels) and acts on `Analysis.action`, as `Rollout.tick` does: a failure counts (each tick brings new traffic), at
`failure_limit` it rolls back, and a step moves on after its ticks. The looks of 200 rollouts are computed at once with
the functions `compare_rates` and `compare_latency` decide with (`rate_decisions`, `latency_counts`), as `judge` at
every look of every rollout would take minutes; `test_the_replay_decides_as_judge_...` checks them against `judge` on
the cumulated traffic at sampled looks, and the all-error challenger goes through `analyze` on records at every tick.
Traffic: 50 challenger requests a tick, the champion 9x as many, latencies from one lognormal (median 50 ms)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from mlray.rollout.analysis import (
    SEQUENTIAL_STATUS,
    Analysis,
    Check,
    Traffic,
    alpha_per_check,
    analyze,
    divergence_check,
    judge,
    population_stability,
)
from mlray.rollout.sequential import fixed_horizon_n, latency_counts, rate_decisions
from mlray.spec import RolloutChecks, RolloutSpec

ROLLOUTS, PER_TICK, CHAMPION_X = 200, 50, 9
RULES = RolloutSpec(steps=[5, 25, 50, 100], min_requests=50, failure_limit=2)  # the spec's defaults but the shadow step


@dataclass
class World:
    """Each rollout's traffic, tick by tick: failed requests per tick, and the latencies and scores of the answered
    ones in order (the first k are those of the first k answered requests)."""
    champion_errors: np.ndarray  # (rollouts, ticks)
    challenger_errors: np.ndarray
    champion_latency: np.ndarray  # (rollouts, ticks × requests a tick)
    challenger_latency: np.ndarray
    champion_scores: np.ndarray
    challenger_scores: np.ndarray

    def traffic(self, rollout: int, tick: int) -> tuple[Traffic, Traffic]:
        """Both versions' tallies since the rollout began, after `tick` (0-based)."""
        return tuple(Traffic(n, int(errors[rollout, :tick + 1].sum()), latency[rollout, :n - errors[rollout, :tick + 1].sum()],
                             scores[rollout, :n - errors[rollout, :tick + 1].sum()])
                     for n, errors, latency, scores in (
                         ((tick + 1) * PER_TICK * CHAMPION_X, self.champion_errors, self.champion_latency,
                          self.champion_scores),
                         ((tick + 1) * PER_TICK, self.challenger_errors, self.challenger_latency,
                          self.challenger_scores)))


def world(seed: int, champion_errors: float, challenger_errors: float, ticks: int, rollouts: int = ROLLOUTS) -> World:
    rng = np.random.default_rng(seed)
    per_tick = {"champion": PER_TICK * CHAMPION_X, "challenger": PER_TICK}
    errors = {"champion": champion_errors, "challenger": challenger_errors}
    made = {}
    for arm, n in per_tick.items():
        made[f"{arm}_errors"] = rng.binomial(n, errors[arm], (rollouts, ticks))
        made[f"{arm}_latency"] = rng.lognormal(np.log(50), 0.5, (rollouts, ticks * n))
        made[f"{arm}_scores"] = rng.normal(0.3, 0.1, (rollouts, ticks * n))
    return World(**made)


@dataclass
class Outcome:
    status: str  # 'rolled_back', 'promoted' or 'running' (still going after the ticks simulated)
    tick: int  # the tick it ended at (0-based)
    looks: list[tuple[int, dict[str, str], bool]]  # (tick, check statuses, step over) of every look


def looks_at(w: World, tick: int, rollouts: np.ndarray, checks: RolloutChecks) -> tuple[np.ndarray, np.ndarray]:
    """The error-rate and latency statuses of `rollouts` after `tick`, at once."""
    alpha = alpha_per_check(checks, regression=False)
    n0, n1 = (tick + 1) * PER_TICK * CHAMPION_X, (tick + 1) * PER_TICK
    e0 = w.champion_errors[rollouts, :tick + 1].sum(axis=1)
    e1 = w.challenger_errors[rollouts, :tick + 1].sum(axis=1)
    errors = rate_decisions(e0, n0, e1, n1, checks.max_error_rate, alpha)
    slow = np.array([latency_counts(w.champion_latency[r, :n0 - a], w.challenger_latency[r, :n1 - b],
                                    checks.max_p99_latency_ratio)[:5] for r, a, b in zip(rollouts, e0, e1)]).T
    latency = rate_decisions(*slow[:4], slow[4], alpha)
    return np.vectorize(SEQUENTIAL_STATUS.get)(errors), np.vectorize(SEQUENTIAL_STATUS.get)(latency)


def divergence(w: World, rollout: int, tick: int, checks: RolloutChecks) -> Check:
    champion, challenger = w.traffic(rollout, tick)
    return divergence_check(population_stability(champion.scores, challenger.scores), checks.max_divergence, [], None)


def replay(w: World, ticks_per_step: int, checks: RolloutChecks, ticks: int) -> list[Outcome]:
    """Every rollout, tick by tick, through `Analysis.action` and the controller's counting of failures."""
    rollouts = len(w.champion_errors)
    outcomes = [Outcome("running", ticks - 1, []) for _ in range(rollouts)]
    step, step_started, failures = np.zeros(rollouts, int), np.zeros(rollouts, int), np.zeros(rollouts, int)
    for tick in range(ticks):
        active = np.array([r for r in range(rollouts) if outcomes[r].status == "running"])
        if not len(active):
            break
        errors, latency = looks_at(w, tick, active, checks)
        for r, error_status, latency_status in zip(active, errors, latency):
            step_over = tick + 1 - step_started[r] >= ticks_per_step
            psi = divergence(w, r, tick, checks) if step_over else Check("score_divergence", "waiting", None, 0.25)
            analysis = Analysis([Check("error_rate", error_status, None, 0.02, always_valid=True),
                                 Check("p99_latency_ratio", latency_status, None, 1.5, always_valid=True), psi,
                                 Check("live_accuracy_drop", "skipped", None, 0.05)], 0, 0)
            outcomes[r].looks.append((tick, {c.name: c.status for c in analysis.checks}, step_over))
            action = analysis.action(step_over)
            if action == "fail":
                failures[r] += 1
                step_started[r] = tick + 1  # the step's interval starts again
                if failures[r] >= RULES.failure_limit:
                    outcomes[r].status, outcomes[r].tick = "rolled_back", tick
            elif action == "advance":
                step[r], step_started[r] = step[r] + 1, tick + 1
                if step[r] == len(RULES.steps):
                    outcomes[r].status, outcomes[r].tick = "promoted", tick
    return outcomes


def share(outcomes: list[Outcome], status: str) -> float:
    return float(np.mean([o.status == status for o in outcomes]))


def test_equal_versions_looked_at_every_tick_are_rarely_rolled_back():
    """1% errors both, 4 steps of 10 ticks: 40 looks and more (a failure restarts its step)."""
    checks = RULES.checks
    outcomes = replay(world(1, 0.01, 0.01, 50), 10, checks, 50)
    rolled_back = share(outcomes, "rolled_back")
    looks = np.mean([len(o.looks) for o in outcomes])
    print(f"\nequal versions, {ROLLOUTS} rollouts, {looks:.0f} looks each on average: rolled back {rolled_back:.1%} "
          f"(α {checks.alpha}), promoted {share(outcomes, 'promoted'):.1%}")
    assert rolled_back <= checks.alpha
    assert share(outcomes, "promoted") >= 1 - checks.alpha  # an undecided check does not hold a step


def test_a_challenger_with_twice_the_errors_is_rolled_back_on_fewer_requests_than_a_fixed_horizon_test():
    """1% → 2% errors, `max_error_rate` 0.01 (the effect to detect: one point); 4 steps of 20 ticks (4,000 challenger
    requests), as a point on a 1% rate takes about a thousand to tell at the error check's α share."""
    checks = RULES.checks.model_copy(update={"max_error_rate": 0.01})
    outcomes = replay(world(2, 0.01, 0.02, 90), 20, checks, 90)
    rolled_back = share(outcomes, "rolled_back")
    requests = [(o.tick + 1) * PER_TICK for o in outcomes if o.status == "rolled_back"]
    median = float(np.median(requests))
    alpha = alpha_per_check(checks, regression=False)
    fixed = {a: fixed_horizon_n(0.01, 0.02, a, rolled_back, ratio=CHAMPION_X) for a in (alpha, checks.alpha)}
    print(f"\n1% -> 2% errors, {ROLLOUTS} rollouts: rolled back {rolled_back:.1%}, promoted "
          f"{share(outcomes, 'promoted'):.1%}; median challenger requests at the rollback {median:.0f}; a fixed-horizon "
          f"one-sided z-test of the same power and {CHAMPION_X}:1 split needs {fixed[alpha]} at the error check's α "
          f"{alpha:g} ({median / fixed[alpha]:.2f}x), {fixed[checks.alpha]} at α {checks.alpha:g} "
          f"({median / fixed[checks.alpha]:.2f}x)")
    assert rolled_back >= 0.9
    assert median <= fixed[alpha]


def test_the_replay_decides_as_judge_on_the_cumulated_traffic():
    w = world(3, 0.01, 0.015, 20, rollouts=12)
    checks = RULES.checks
    outcomes = replay(w, 10, checks, 20)
    rng = np.random.default_rng(4)
    for r in range(12):
        tick, statuses, step_over = outcomes[r].looks[rng.integers(len(outcomes[r].looks))]
        analysis = judge(*w.traffic(r, tick), checks, RULES.min_requests)
        judged = {c.name: c.status for c in analysis.checks}
        assert judged["error_rate"] == statuses["error_rate"] and judged["p99_latency_ratio"] == statuses[
            "p99_latency_ratio"], (r, tick)
        if step_over:
            assert judged["score_divergence"] == statuses["score_divergence"]
        assert analysis.action(step_over) == Analysis([Check(name, status, None, 0.0, always_valid=name in (
            "error_rate", "p99_latency_ratio")) for name, status in statuses.items()], 0, 0).action(step_over)


@pytest.mark.parametrize("champion_x", [CHAMPION_X, 1])  # a 5% step; the shadow step (every request mirrored)
def test_a_challenger_failing_every_request_is_rolled_back_within_a_few_ticks(champion_x):
    """Through `analyze` on the records at every tick, 10 challenger requests a tick, min_requests 5 (a quick rollout
    of the integration tests)."""
    rng = np.random.default_rng(5)
    rules = RULES.model_copy(update={"min_requests": 5})
    champion, challenger, failures = [], [], 0
    for tick in range(10):
        champion += [record(f"a{tick}-{i}", rng.random() < 0.01, rng) for i in range(10 * champion_x)]
        challenger += [record(f"b{tick}-{i}", True, rng) for i in range(10)]
        analysis = analyze(champion, challenger, {}, rules.checks, rules.min_requests)
        if analysis.action(step_over=False) == "fail":
            failures += 1
            assert [c.name for c in analysis.failing(step_over=False)] == ["error_rate"]
        if failures >= rules.failure_limit:
            break
    print(f"\na challenger failing every request against {champion_x}x its traffic: rolled back at tick {tick + 1}, "
          f"on {len(challenger)} of its requests")
    assert failures == rules.failure_limit and len(challenger) <= 30


def record(request_id: str, failed: bool, rng: np.random.Generator) -> dict:
    return {"request_id": request_id, "row": 0, "error": "RuntimeError" if failed else None,
            "latency_ms": float(rng.lognormal(np.log(50), 0.5)), "score": None if failed else float(rng.beta(2, 5)),
            "prediction": None if failed else "false", "shadow": False}
