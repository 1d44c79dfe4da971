"""Always-valid sequential comparisons of a challenger against the champion, safe to look at every tick.

Every check becomes a comparison of two proportions: the share of "bad" requests of each version (errors; requests
slower than the champion's p99; wrong answers on labelled rows). Δ = p_challenger − p_champion is how much worse the
challenger is (positive: worse). It is judged on the cumulative counts since the rollout started, at every tick, by
always-valid bounds (confidence sequences): looking as often as one likes does not raise the error rates above α,
unlike a fixed-horizon test repeated at every tick (the peeking problem), which rolls back equal challengers by chance.

Method: a mixture sequential probability ratio test (mSPRT, Johari et al.) on the score statistic, inverted into
confidence sequences (asymptotic, in the sense of Waudby-Smith et al.). For a hypothesised difference θ, V(θ) is the
variance of Δ̂ at the restricted maximum-likelihood rates with p_challenger − p_champion = θ (Farrington–Manning),
computed on counts with one bad and one good request added to each arm (Agresti–Caffo), so an arm without events
never has zero variance. In information time I = 1/V(θ), S = (Δ̂ − θ)·I is approximately a Brownian motion with drift
Δ − θ; mixing exp(λS − λ²I/2) over λ ~ N(m, τ²) (ρ = 1/τ²) gives the martingale
M = sqrt(ρ/(I+ρ))·exp((S + mρ)²/(2(I+ρ)) − m²ρ/2), and by Ville's inequality P(M ever ≥ 1/α) ≤ α. M ≥ 1/α when
Δ̂ − θ ≥ w(I) = (R − mρ)/I, R² = 2(I+ρ)·(log(1/α) + m²ρ/2 + ½·log((I+ρ)/ρ)).

The mixture is centred on the effect to detect: m = the tolerance (`MIN_EFFECT` when it is 0), τ = m/2, i.e. 95% of
its mass on effects between 0 and twice the tolerance. It lies between Wald's SPRT of 0 against m (τ → 0: fastest at
exactly m, but its bounds never come closer than m/2) and the zero-centred mSPRT (centre 0, τ = m: in the simulation
of the tests, about 40% more requests both to fail a challenger worse by m and to pass an equal one). Its mass lies near
the tolerance, so alone it is slow to see a large effect: a challenger failing every request, on as many requests as the
champion, takes it hundreds. A second, wide mixture (centre `WIDE_EFFECT` = 0.5, τ = 0.25: effects up to the whole
scale) spends `WIDE_SHARE` = 20% of α and sees that one in ten; the narrow one keeps 80%, which costs about 5% more
requests at the tolerance. θ is beyond a bound when either martingale reaches its share of 1/α (a union bound), so the
bounds are the tighter of the two mixtures'.

Bounds and rules (each bound holds at all ticks at once with probability ≥ 1 − α; together [low, high] is a
(1 − 2α) confidence sequence, the two-one-sided-tests convention):
- low: the θ where Δ̂ − θ = w(I(θ)) (mixture over alternatives above θ); high: where θ − Δ̂ = w(I(θ)).
- "fail" when low > 0: always-valid evidence that the challenger is worse than the champion. Whatever the number of
  looks, a challenger no worse than the champion is failed with probability ≤ α.
- "pass" when high < tolerance: evidence that it is worse by less than the tolerance. A challenger worse by the
  tolerance or more passes with probability ≤ α. When both hold, the challenger is worse, within tolerance: "pass".
- else "continue" (the check is undecided). Between 0 and the tolerance either decision is right (an indifference
  zone), and the nearer one usually comes first. Both rules hold at every look at once, so the rollout may keep
  looking after a "pass": it acts on a "fail" whenever it comes (`mlray.rollout.analysis`).
Both rules are tested directly at θ = 0 and θ = tolerance; the bounds are found on ever finer grids, for the record.

Assumptions: within an arm, requests are independent with a rate that stays put during the rollout (a change that hits
both versions alike mostly cancels in the difference); the counts are cumulative since the rollout started; the normal
approximation, which the pseudo-counts keep on the safe side in small samples (at α = 0.05, a 1% error rate and 50
challenger requests a tick, equal versions are failed in about 3% of rollouts over 100 looks). The latency check's
cut and tolerance are read off the champion's data, so they settle as it accumulates (an asymptotic assumption too).

How `rollout.checks` maps to tolerances (and α):
- `alpha`: split evenly over the checks in force (Bonferroni: error rate, latency, and live accuracy, precision and
  recall for a classifier), so that equal versions fail any of them, at any look, with probability ≤ alpha.
- `max_error_rate`: how many more errors than the champion's the challenger may make, absolute (0.02: 2 points).
- `max_p99_latency_ratio`: `compare_latency` counts requests slower than the champion's p99 (the champion's own
  share is 1% by construction); the tolerance is how much more often a challenger slower by that ratio at every
  quantile would exceed that cut, read off the champion's distribution: share(champion > p99 / ratio) − 1%.
- `max_metric_drop`: the drop of live accuracy, precision or recall (each a proportion of its denominator: labelled
  rows, predicted positives, actual positives; a macro average over classes enters on its effective counts, see
  `mlray.rollout.analysis`) the challenger may show; `compare_quality` counts misses as bad events. The relative
  rise of a regression's mean absolute error is not a proportion and is not covered here.
- `max_divergence` (PSI) is no comparison of rates and stays a plain threshold.

References: R. Johari, P. Koomen, L. Pekelis, D. Walsh, "Always valid inference: continuous monitoring of A/B tests",
Operations Research 2022 (arXiv:1512.04922); S. Howard, A. Ramdas, J. McAuliffe, J. Sekhon, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Annals of Statistics 2021; I. Waudby-Smith, D. Arbour, R. Sinha,
E. Kennedy, A. Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences" (arXiv:2103.06476);
M. Lindon, C. Sanden, V. Shirikian, "Rapid regression detection in software deployments through sequential testing",
KDD 2022 (Netflix's canaries); A. Wald, "Sequential tests of statistical hypotheses", 1945; C. Farrington,
G. Manning, "Test statistics and sample size formulae for comparative binomial trials with null hypothesis of
non-zero risk difference or non-unity relative risk", Statistics in Medicine 1990; A. Agresti, B. Caffo, "Simple and
effective confidence intervals for proportions and differences of proportions", The American Statistician 2000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

MIN_EFFECT = 0.005  # the effect the mixture is centred on when the tolerance is 0 (half a point)
MIXTURE_SPREAD = 0.5  # τ / m: the mixture's standard deviation relative to its centre
WIDE_EFFECT = 0.5  # the centre of the wide mixture (τ = 0.25: effects up to the whole scale), which sees large ones early
WIDE_SHARE = 0.2  # the share of α the wide mixture spends
PSEUDO = 1.0  # bad and good requests added to each arm's counts in the variance (Agresti–Caffo)
GRID, ROUNDS = 16, 5  # the bounds: five rounds of a 16-cell grid place them within 2e-6 (for the record)


@dataclass(frozen=True)
class SequentialResult:
    """One always-valid comparison at one look: the decision, the estimate, its bounds and the counts behind them."""
    decision: str  # 'fail', 'pass' or 'continue'
    estimate: float | None  # Δ̂: how much worse the challenger is (rate difference or metric drop); None without data
    low: float | None  # always-valid (1 − α) lower bound on Δ
    high: float | None  # always-valid (1 − α) upper bound on Δ
    tolerance: float
    alpha: float
    champion_events: int  # bad events (errors, slow requests, misses)
    champion_n: int
    challenger_events: int
    challenger_n: int
    detail: str


def fixed_horizon_n(p0: float, p1: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0) -> int:
    """Challenger requests a one-sided pooled two-proportion z-test needs to tell p1 from p0 (champion gets ratio×)."""
    if p0 == p1:
        raise ValueError("p0 and p1 must differ")
    pooled = (ratio * p0 + p1) / (1 + ratio)
    null = norm.ppf(1 - alpha) * math.sqrt(pooled * (1 - pooled) * (1 + 1 / ratio))
    alternative = norm.ppf(power) * math.sqrt(p1 * (1 - p1) + p0 * (1 - p0) / ratio)
    return math.ceil(((null + alternative) / (p1 - p0)) ** 2)


def _restricted_rates(x1, n1, x2, n2, theta):
    """Maximum-likelihood rates of two binomial arms under p1 − p2 = θ (Farrington–Manning's closed form)."""
    p1, p2, t = x1 / n1, x2 / n2, n2 / n1
    a = 1 + t
    b = -(1 + t + p1 + t * p2 + theta * (t + 2))
    c = theta * theta + theta * (2 * p1 + t + 1) + p1 + t * p2
    d = -p1 * theta * (1 + theta)
    v = b ** 3 / (3 * a) ** 3 - b * c / (6 * a * a) + d / (2 * a)
    u = np.where(v < 0, -1.0, 1.0) * np.sqrt(np.maximum(b * b / (3 * a) ** 2 - c / (3 * a), 0.0))
    safe_u = np.where(u == 0, 1.0, u)
    angle = (np.pi + np.arccos(np.clip(np.where(u == 0, 0.0, v / safe_u ** 3), -1.0, 1.0))) / 3
    q1 = np.clip(2 * u * np.cos(angle) - b / (3 * a), np.maximum(theta, 0.0), np.minimum(1.0 + theta, 1.0))
    return q1, q1 - theta


def _information(champion_events, champion_n, challenger_events, challenger_n, theta):
    """1 / Var(Δ̂) at the rates restricted to Δ = θ, on pseudo-counted data."""
    n1, n2 = challenger_n + 2 * PSEUDO, champion_n + 2 * PSEUDO
    q1, q2 = _restricted_rates(challenger_events + PSEUDO, n1, champion_events + PSEUDO, n2, theta)
    variance = q1 * (1 - q1) / n1 + q2 * (1 - q2) / n2
    with np.errstate(divide="ignore"):
        return np.where(variance > 0, 1 / np.maximum(variance, 1e-300), np.inf)


def _half_width(information, alpha, effect):
    """w(I): how far Δ̂ must be from θ for either mixture martingale to reach its share of 1/α: the one centred on the
    effect to detect, at (1 − WIDE_SHARE)·α, or the wide one, at WIDE_SHARE·α (a union bound: see the module's
    docstring)."""
    return np.minimum(_mixture_half_width(information, (1 - WIDE_SHARE) * alpha, effect),
                      _mixture_half_width(information, WIDE_SHARE * alpha, np.asarray(WIDE_EFFECT)))


def _mixture_half_width(information, alpha, effect):
    """w(I) of one mixture, centred on `effect` with τ = MIXTURE_SPREAD·effect."""
    rho = 1 / (MIXTURE_SPREAD * effect) ** 2
    a = information + rho
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.sqrt(2 * a * (math.log(1 / alpha) + 0.5 / MIXTURE_SPREAD ** 2 + 0.5 * np.log(a / rho)))
        return np.where(np.isinf(information), 0.0, (r - effect * rho) / information)


def _margin(counts, estimate, theta, alpha, effect, sign):
    """How far θ lies beyond the bound on its side (sign +1: below the lower bound; −1: above the upper bound)."""
    return sign * (estimate - theta) - _half_width(_information(*counts, theta), alpha, effect)


def _counts(champion_events, champion_n, challenger_events, challenger_n):
    return tuple(np.asarray(x, dtype=float) for x in (champion_events, champion_n, challenger_events, challenger_n))


def _effect(tolerance):
    return np.maximum(np.asarray(tolerance, dtype=float), MIN_EFFECT)


def rate_decisions(champion_events: ArrayLike, champion_n: ArrayLike, challenger_events: ArrayLike,
                   challenger_n: ArrayLike, tolerance: ArrayLike, alpha: float = 0.05) -> np.ndarray:
    """`compare_rates`'s decisions for arrays of counts at once (simulations, replays); an arm without requests: 'continue'."""
    counts = _counts(champion_events, champion_n, challenger_events, challenger_n)
    xa, na, xb, nb = counts
    tolerance, effect = np.asarray(tolerance, dtype=float), _effect(tolerance)
    empty = (na <= 0) | (nb <= 0)
    safe = (xa, np.where(empty, 1.0, na), xb, np.where(empty, 1.0, nb))
    estimate = safe[2] / safe[3] - safe[0] / safe[1]
    fail = _margin(safe, estimate, 0.0, alpha, effect, +1) > 0
    passed = _margin(safe, estimate, tolerance, alpha, effect, -1) > 0
    return np.where(empty, "continue", np.where(passed, "pass", np.where(fail, "fail", "continue")))


def _bounds(counts, estimate, alpha, effect) -> tuple[float, float]:
    """The lower and upper always-valid bounds at once: where the margin on each side crosses 0, found on ever finer
    grids (each round narrows the bracket to one of GRID cells) and kept on the outer side, as a bisection would."""
    sign = np.array([[1.0], [-1.0]])  # the lower bound, then the upper
    inside, outside = np.full((2, 1), float(estimate)), -sign  # the margin is < 0 at Δ̂ and ≥ 0 at Δ = ∓1
    steps = np.linspace(0.0, 1.0, GRID + 1)
    for _ in range(ROUNDS):
        thetas = inside + (outside - inside) * steps
        beyond = _margin(counts, estimate, thetas, alpha, effect, sign) > 0
        beyond[:, -1] = True  # the far end counts as beyond the bound, as a bisection takes it
        first = np.maximum(np.argmax(beyond, axis=1), 1)[:, None]
        inside, outside = np.take_along_axis(thetas, first - 1, 1), np.take_along_axis(thetas, first, 1)
    return float(outside[0, 0]), float(outside[1, 0])


def _check_counts(events: int, n: int, arm: str) -> None:
    if n < 0 or events < 0 or events > n:
        raise ValueError(f"{arm}: {events} events out of {n} requests")


def _points(value: float) -> str:
    return f"{value * 100:+.2f}"


def compare_rates(champion_events: int, champion_n: int, challenger_events: int, challenger_n: int, tolerance: float,
                  alpha: float = 0.05, label: str = "error rate") -> SequentialResult:
    """Always-valid comparison of the challenger's rate of bad events with the champion's (see the module's rules)."""
    _check_counts(champion_events, champion_n, "champion")
    _check_counts(challenger_events, challenger_n, "challenger")
    counts = (champion_events, champion_n, challenger_events, challenger_n)
    tol = f"{_points(tolerance)} pts tolerance"
    if champion_n == 0 or challenger_n == 0:
        return SequentialResult("continue", None, None, None, tolerance, alpha, *counts,
                                f"{label}: no requests yet (champion {champion_n}, challenger {challenger_n}); {tol}")
    decision = str(rate_decisions(*counts, tolerance, alpha))
    estimate = challenger_events / challenger_n - champion_events / champion_n
    low, high = _bounds(_counts(*counts), estimate, alpha, _effect(tolerance))
    why = {"fail": "worse than the champion (lower bound > 0)",
           "pass": f"within the {tol} (upper bound below it)",
           "continue": f"undecided (the bounds hold both 0 and the {tol})"}[decision]
    return SequentialResult(
        decision, estimate, low, high, tolerance, alpha, *counts,
        f"{decision}: challenger {label} {challenger_events / challenger_n:.2%} of {challenger_n} vs champion "
        f"{champion_events / champion_n:.2%} of {champion_n}: {_points(estimate)} pts, always-valid {1 - alpha:.0%} "
        f"bounds [{_points(low)}, {_points(high)}]: {why}")


def latency_counts(champion_ms: ArrayLike, challenger_ms: ArrayLike, max_ratio: float, quantile: float = 0.99
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Latency as bad events: requests slower than the champion's `quantile`, along the last axis (leading axes:
    independent comparisons). Returns champion events, champion n, challenger events, challenger n, the tolerance
    (share of the champion slower than cut / max_ratio, minus its share slower than the cut) and the cut."""
    champion, challenger = np.asarray(champion_ms, dtype=float), np.asarray(challenger_ms, dtype=float)
    cut = _quantile(champion, quantile)
    slower = np.sum(champion > cut, axis=-1)
    tolerance = np.maximum(np.mean(champion > cut / max_ratio, axis=-1) - slower / champion.shape[-1], 0.0)
    return (slower, np.full(slower.shape, champion.shape[-1]), np.sum(challenger > cut, axis=-1),
            np.full(slower.shape, challenger.shape[-1]), tolerance, cut[..., 0])


def _quantile(values: np.ndarray, quantile: float) -> np.ndarray:
    """np.quantile along the last axis (linear interpolation, dimensions kept) by a partial sort around its two order
    statistics: the rollout computes it at every look, on every champion answer since the rollout began."""
    position = quantile * (values.shape[-1] - 1)
    below, above = math.floor(position), math.ceil(position)
    ordered = np.partition(values, [below, above], axis=-1)
    low, high = ordered[..., below:below + 1], ordered[..., above:above + 1]
    return low + (high - low) * (position - below)


def compare_latency(champion_ms: ArrayLike, challenger_ms: ArrayLike, max_ratio: float, alpha: float = 0.05,
                    quantile: float = 0.99) -> SequentialResult:
    """Always-valid comparison of the challenger's share of requests slower than the champion's p99 (`quantile`)."""
    champion = np.asarray(champion_ms, dtype=float).ravel()
    challenger = np.asarray(challenger_ms, dtype=float).ravel()
    champion, challenger = champion[~np.isnan(champion)], challenger[~np.isnan(challenger)]
    needed = math.ceil(1 / (1 - quantile))
    if len(champion) < needed or len(challenger) == 0:
        return SequentialResult("continue", None, None, None, 0.0, alpha, 0, len(champion), 0, len(challenger),
                                f"latency: {len(champion)} champion requests (need {needed} for its p{quantile * 100:g}), "
                                f"{len(challenger)} challenger requests")
    slow, n, challenger_slow, challenger_n, tolerance, cut = latency_counts(champion, challenger, max_ratio, quantile)
    result = compare_rates(int(slow), int(n), int(challenger_slow), int(challenger_n), float(tolerance), alpha,
                           f"share slower than the champion's p{quantile * 100:g} ({float(cut):.4g} ms)")
    return replace(result, detail=f"{result.detail}; the tolerance is a {max_ratio:g}x slowdown on the champion's "
                                  f"latencies")


def compare_quality(champion_hits: int, champion_n: int, challenger_hits: int, challenger_n: int, max_drop: float,
                    alpha: float = 0.05, metric: str = "accuracy") -> SequentialResult:
    """Always-valid comparison of a live metric that is a proportion, higher better (hits: correct rows, true
    positives); Δ is its drop, champion minus challenger, and `max_drop` the tolerance."""
    _check_counts(champion_hits, champion_n, "champion")
    _check_counts(challenger_hits, challenger_n, "challenger")
    result = compare_rates(champion_n - champion_hits, champion_n, challenger_n - challenger_hits, challenger_n,
                           max_drop, alpha, f"live {metric} misses")
    if result.estimate is None:
        return replace(result, detail=f"live {metric}: no labelled rows yet (champion {champion_n}, challenger "
                                      f"{challenger_n}); {max_drop:.3f} tolerance")
    why = {"fail": "lower than the champion's (lower bound > 0)", "pass": "within the tolerance (upper bound below it)",
           "continue": "undecided (the bounds hold both 0 and the tolerance)"}[result.decision]
    return replace(result, detail=f"{result.decision}: live {metric} {challenger_hits / challenger_n:.3f} of "
                                  f"{challenger_n} vs champion {champion_hits / champion_n:.3f} of {champion_n}: drop "
                                  f"{result.estimate:+.3f}, always-valid {1 - alpha:.0%} bounds [{result.low:+.3f}, "
                                  f"{result.high:+.3f}], {max_drop:.3f} tolerance: {why}")
