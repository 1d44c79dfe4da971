"""One look of a rollout's analysis: the challenger against the champion on their traffic since the rollout began.

Always-valid checks (`mlray.rollout.sequential`), safe to look at every tick: the error rate, the p99 latency (the share
of requests slower than the champion's p99) and, once enough labelled feedback has arrived, live accuracy, precision
and recall, each a comparison of two proportions on the cumulated counts. Such a check 'fail's on always-valid evidence
that the challenger is worse than the champion, 'pass'es on evidence that it is worse by less than its tolerance (its
threshold in `rollout.checks`: the effect to detect), and is 'undecided' until one comes. `checks.alpha` is split
evenly over the always-valid checks in force (Bonferroni: five for a classifier, two for a regression), so a challenger
no worse than the champion fails any of them, at any look, with probability at most alpha. Macro precision and recall
(averages over classes) are compared on effective counts: one proportion with the same mean and variance.

Plain thresholds, which repeated looks would trip by chance (the controller acts on them only at a step's end): the
divergence of their score distributions (population stability index) and, for regression, the relative rise of the
mean absolute error, which is no proportion. A check without the data it needs is 'waiting' (it holds the step); live
quality without enough labels is 'skipped' unless the spec requires labels.

Score divergence from the champion is evidence, not a veto. Beyond its threshold it fails the step only when nothing
explains it; it is 'noted' (counted like a pass, and named in the verdict with the evidence that decided) when the
challenger answers an incident (it was retrained because the world moved, so it is meant to score differently), or
when the labels show it at least as good as the champion on every live metric compared, or, before any labels, when
the quality estimated from each version's own calibrated scores (the drift monitor's latest window, `estimated`) shows
it at least as good on every metric estimated. A challenger that is worse on labels is judged by the live-quality
checks and their tolerance, not by how differently it scores.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from mlray.quality import label_metrics, regression_metrics
from mlray.rollout.sequential import SequentialResult, compare_latency, compare_quality, compare_rates
from mlray.spec import RolloutChecks

PSI_BINS = 10


# a check's status: 'pass', 'fail', 'undecided' (an always-valid check with no evidence either way yet: it does not
# hold the step), 'waiting' (not enough data yet: the step neither passes nor fails), 'skipped' (optional and no data)
# or 'noted' (past its threshold, but other evidence outranks it: see `decided_by`). The step passes when every check
# is 'pass', 'undecided', 'skipped' or 'noted'.
NOT_BLOCKING = ("pass", "undecided", "skipped", "noted")
SEQUENTIAL_STATUS = {"fail": "fail", "pass": "pass", "continue": "undecided"}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # 'pass', 'fail', 'undecided', 'waiting', 'skipped' or 'noted' (see NOT_BLOCKING)
    value: float | None
    threshold: float
    detail: str = ""  # always-valid: the counts and bounds; a plain threshold past it: why it failed or was noted
    # the evidence that decided a check past its threshold: 'labels' (live quality against the champion's),
    # 'incident' (the challenger answers one and there are no labels yet) or 'threshold' (nothing else to go on)
    decided_by: str = ""
    always_valid: bool = False  # an always-valid sequential test (its fail counts at any look), else a plain threshold

    @property
    def reason(self) -> str:
        """Why it failed, for the audit."""
        if self.always_valid:
            return f"{self.name}: {self.detail}"
        return f"{self.name} {self.value:.4g} > {self.threshold:g}" + (f" ({self.detail})" if self.decided_by else "")


@dataclass(frozen=True)
class Analysis:
    checks: list[Check]
    champion_requests: int
    challenger_requests: int
    incident: str | None = None  # the incident the challenger answers, if any

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def noted(self) -> list[Check]:
        return [c for c in self.checks if c.status == "noted"]

    @property
    def undecided(self) -> list[str]:
        return [c.name for c in self.checks if c.status == "undecided"]

    @property
    def verdict(self) -> str:
        """'fail' if any check failed, 'pass' if all passed (or were undecided, skipped or noted), else 'waiting'."""
        if self.failed:
            return "fail"
        return "pass" if all(c.status in NOT_BLOCKING for c in self.checks) else "waiting"

    def failing(self, step_over: bool) -> list[Check]:
        """The failed checks a look acts on: an always-valid one at any look, a plain threshold (which repeated looks
        would trip by chance) only once the step's interval is over."""
        return [c for c in self.failed if c.always_valid or step_over]

    def action(self, step_over: bool) -> str:
        """What the rollout does after this look: 'fail' (a check in `failing`), 'advance' (the step's interval is over,
        nothing failed and no check waits for data: an undecided check does not hold the step) or 'wait'."""
        if self.failing(step_over):
            return "fail"
        return "advance" if step_over and self.verdict == "pass" else "wait"

    @property
    def notes(self) -> list[str]:
        """Each check past its threshold that did not fail the step, with the evidence that outranked it, e.g.
        'score_divergence 0.40 > 0.25 noted: answers incident X; live precision 0.910 >= champion 0.880'."""
        return [f"{c.name} {c.value:.2f} > {c.threshold:g} noted: {c.detail}" for c in self.noted]

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "champion_requests": self.champion_requests,
                "challenger_requests": self.challenger_requests, "incident": self.incident, "evidence": self.notes,
                "checks": [asdict(c) for c in self.checks]}


@dataclass(frozen=True, eq=False)
class Traffic:
    """What the analysis reads of one version's inference-log records: its requests, the failed ones, the latencies
    and scores of the answered ones and (prediction, true label) of those with feedback. Tallies add up, so a replay
    may cumulate them tick by tick rather than read every record again."""
    requests: int = 0
    errors: int = 0
    latencies: np.ndarray = field(default_factory=lambda: np.empty(0))  # ms
    scores: np.ndarray = field(default_factory=lambda: np.empty(0))
    labelled: tuple = ()
    regression: bool = False  # its predictions are numbers

    @classmethod
    def of(cls, records: list[dict], labels: dict[tuple[str, int], str]) -> Traffic:
        answered = [r for r in records if not r.get("error")]
        return cls(len(records), len(records) - len(answered),
                   np.array([r["latency_ms"] for r in answered], dtype=float),
                   np.array([r["score"] for r in answered if r.get("score") is not None], dtype=float),
                   tuple(_labelled(answered, labels)), _predicts_numbers(answered))

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.requests + other.requests, self.errors + other.errors,
                       np.concatenate([self.latencies, other.latencies]), np.concatenate([self.scores, other.scores]),
                       self.labelled + other.labelled, self.regression or other.regression)


def population_stability(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of `actual` against `expected` over the expected's deciles (0: the same distribution)."""
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, PSI_BINS + 1)))
    if len(edges) < 2:
        return 0.0 if np.allclose(actual, expected[0]) else float("inf")
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.histogram(expected, edges)[0] / len(expected)
    a = np.histogram(actual, edges)[0] / len(actual)
    e, a = np.clip(e, 1e-4, None), np.clip(a, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _p99(values: np.ndarray) -> float:
    return float(np.percentile(values, 99)) if len(values) else float("nan")


def alpha_per_check(checks: RolloutChecks, regression: bool) -> float:
    """`checks.alpha` split evenly (Bonferroni) over the always-valid checks in force: error rate and p99 latency, and
    for a classifier live accuracy, precision and recall (a regression's error is a plain threshold)."""
    return checks.alpha / (2 if regression else 5)


def analyze(champion: list[dict], challenger: list[dict], labels: dict[tuple[str, int], str],
            checks: RolloutChecks, min_requests: int, incident: str | None = None,
            estimated: list[Compared] = ()) -> Analysis:
    """`champion`/`challenger`: inference-log records (request_id, row, error, latency_ms, score, prediction, shadow)
    since the rollout began; `labels`: (request_id, row) → the true label as text; `incident`: the incident the
    challenger answers (its retraining was triggered by drift or a quality drop), if any; `estimated`: both versions'
    quality estimated before labels, the divergence's evidence while there are none."""
    return judge(Traffic.of(champion, labels), Traffic.of(challenger, labels), checks, min_requests, incident,
                 estimated)


def judge(champion: Traffic, challenger: Traffic, checks: RolloutChecks, min_requests: int,
          incident: str | None = None, estimated: list[Compared] = ()) -> Analysis:
    """`analyze` on the two versions' tallies: what a replay that cumulates them tick by tick calls."""
    alpha = alpha_per_check(checks, champion.regression or challenger.regression)
    enough = challenger.requests >= min_requests and champion.requests >= 1
    scored = min(len(champion.scores), len(challenger.scores)) >= min_requests
    psi = population_stability(champion.scores, challenger.scores) if enough and scored else None
    quality, compared = _quality_checks(champion.labelled, challenger.labelled, checks, alpha)
    return Analysis([_error_check(champion, challenger, checks.max_error_rate, alpha, min_requests, enough),
                     _latency_check(champion, challenger, checks.max_p99_latency_ratio, alpha, enough),
                     divergence_check(psi, checks.max_divergence, compared, incident, estimated), *quality],
                    champion.requests, challenger.requests, incident)


def _error_check(champion: Traffic, challenger: Traffic, tolerance: float, alpha: float, min_requests: int,
                 enough: bool) -> Check:
    """The challenger's share of failed requests against the champion's, e.g. 'errors 3/400 vs champion 2/3600; Δ in
    [-0.42, +1.90] points, always-valid at α 0.01: undecided between 0 and the 2-point tolerance'."""
    counts = f"errors {challenger.errors}/{challenger.requests} vs champion {champion.errors}/{champion.requests}"
    if not enough:
        return Check("error_rate", "waiting", None, tolerance, f"{counts} (need {min_requests} challenger requests)",
                     always_valid=True)
    result = compare_rates(champion.errors, champion.requests, challenger.errors, challenger.requests, tolerance, alpha)
    return _sequential_check("error_rate", result, result.estimate, tolerance, counts,
                             f"{tolerance * 100:g}-point tolerance")


def _latency_check(champion: Traffic, challenger: Traffic, max_ratio: float, alpha: float, enough: bool) -> Check:
    """The challenger's share of answers slower than the champion's p99 against the champion's own (1%); the value is
    their p99 ratio. It waits for the 100 champion answers a p99 needs."""
    name = "p99_latency_ratio"
    if not (enough and len(champion.latencies) and len(challenger.latencies)):
        return Check(name, "waiting", None, max_ratio, f"answered: champion {len(champion.latencies)}, challenger "
                                                       f"{len(challenger.latencies)}", always_valid=True)
    result = compare_latency(champion.latencies, challenger.latencies, max_ratio, alpha)
    cut, theirs = _p99(champion.latencies), _p99(challenger.latencies)
    ratio = theirs / max(cut, 1e-3)
    if result.estimate is None:
        return Check(name, "waiting", ratio, max_ratio, result.detail, always_valid=True)
    counts = (f"p99 {theirs:.4g} vs champion {cut:.4g} ms; slower than that: {result.challenger_events}/"
              f"{result.challenger_n} vs champion {result.champion_events}/{result.champion_n}")
    return _sequential_check(name, result, ratio, max_ratio, counts,
                             f"{result.tolerance * 100:.3g}-point tolerance (a {max_ratio:g}x slowdown)")


def _sequential_check(name: str, result: SequentialResult, value: float | None, threshold: float, counts: str,
                      tolerance: str, points: bool = True) -> Check:
    """An always-valid comparison as a check: its status from the decision, its detail the counts and the bounds
    (in points of a rate, or as a metric's drop)."""
    status = SEQUENTIAL_STATUS[result.decision]
    bounds = f"[{result.low * 100:+.2f}, {result.high * 100:+.2f}] points" if points else \
        f"[{result.low:+.3f}, {result.high:+.3f}]"
    why = {"fail": "worse than the champion", "pass": f"within the {tolerance}",
           "undecided": f"undecided between 0 and the {tolerance}"}[status]
    return Check(name, status, value, threshold,
                 f"{counts}; Δ in {bounds}, always-valid at α {result.alpha:.2g}: {why}", always_valid=True)


@dataclass(frozen=True)
class Compared:
    """One metric of both versions: live on their labelled feedback, or estimated before labels from their scores."""
    metric: str
    champion: float
    challenger: float
    lower_is_better: bool = False
    source: str = "live"  # or 'estimated'

    @property
    def at_least_as_good(self) -> bool:
        return self.challenger <= self.champion if self.lower_is_better else self.challenger >= self.champion

    def __str__(self) -> str:
        sign = ("<=" if self.lower_is_better else ">=") if self.at_least_as_good else \
            (">" if self.lower_is_better else "<")
        return f"{self.source} {self.metric} {self.challenger:.3f} {sign} champion {self.champion:.3f}"


def divergence_check(psi: float | None, threshold: float, compared: list[Compared], incident: str | None,
                     estimated: list[Compared] = ()) -> Check:
    """The score divergence (PSI) against the champion, weighed with the other evidence (see the module's docstring):
    within the threshold it passes; beyond it, it is 'noted' when the challenger answers an incident, or the labels
    show it at least as good on every metric compared, or (no labels yet) the estimates do, else it fails as a veto."""
    name = "score_divergence"
    if psi is None:
        return Check(name, "waiting", None, threshold, "population stability index")
    if psi <= threshold:
        return Check(name, "pass", psi, threshold, "population stability index")
    labels = ", ".join(str(c) for c in compared) if compared else "no labels yet"
    if incident:
        return Check(name, "noted", psi, threshold, f"answers incident {incident}; {labels}", "incident")
    if compared and all(c.at_least_as_good for c in compared):
        return Check(name, "noted", psi, threshold, labels, "labels")
    if not compared and estimated and all(c.at_least_as_good for c in estimated):
        return Check(name, "noted", psi, threshold, ", ".join(str(c) for c in estimated), "estimates")
    return Check(name, "fail", psi, threshold, f"no incident behind the challenger, and {labels}", "threshold")


def _labelled(records: list[dict], labels: dict[tuple[str, int], str]) -> list[tuple]:
    """(prediction, true label) for each record that has feedback."""
    return [(json.loads(r["prediction"]), labels[(r["request_id"], r["row"])]) for r in records
            if r.get("prediction") and (r["request_id"], r["row"]) in labels]


def live_metrics(pairs: list[tuple], precision_over: set | None = None, recall_over: set | None = None
                 ) -> dict[str, float]:
    """Classification: accuracy, macro precision and macro recall of the predicted labels (over the given classes,
    default all predicted / all seen). Regression (float predictions): mean absolute error. The definitions offline
    evaluation uses (`mlray.quality`)."""
    if _regression(pairs):
        truth, predicted = np.array([float(t) for _, t in pairs]), np.array([float(p) for p, _ in pairs])
        return {"mae": regression_metrics(truth, predicted)["mae"]}
    truth, predicted = _as_labels([t for _, t in pairs]), _as_labels([p for p, _ in pairs])
    return label_metrics(truth, predicted, precision_over, recall_over)


def _regression(pairs: list[tuple]) -> bool:
    """Whether the predictions are numbers (regression) rather than labels."""
    return any(isinstance(p, float) for p, _ in pairs)


def _as_labels(values: list) -> list[str]:
    return [str(v).lower() for v in values]


def _classes_both_have(ours: list[tuple], theirs: list[tuple], side: int, min_count: int) -> set[str]:
    """Labels found at least min_count times on `side` (0: predicted, 1: true) of both versions' pairs."""
    def common(pairs: list[tuple]) -> set[str]:
        return {label for label, n in Counter(_as_labels([pair[side] for pair in pairs])).items() if n >= min_count}
    return common(ours) & common(theirs)


def _quality_checks(ours: tuple, theirs: tuple, checks: RolloutChecks, alpha: float
                    ) -> tuple[list[Check], list[Compared]]:
    """Live quality on labelled feedback ((prediction, true label) pairs), challenger against champion: the drop of
    accuracy, precision and recall (classification, always-valid, max_metric_drop the tolerance), or the relative rise
    of the mean absolute error (regression, a plain threshold). Precision (recall) compares the classes both versions
    predicted (saw) at least min_class_labels times, so a rare class met once in a small sample does not decide the
    step. Also returns the metrics compared (none without enough labels), the evidence the divergence check weighs."""
    if min(len(ours), len(theirs)) < checks.min_labels:
        return [Check("live_accuracy_drop", "waiting" if checks.require_labels else "skipped", None,
                      checks.max_metric_drop,
                      f"labels: champion {len(ours)}, challenger {len(theirs)} (need {checks.min_labels} each)")], []
    if _regression(ours + theirs):
        before, after = live_metrics(ours), live_metrics(theirs)
        rise = (after["mae"] - before["mae"]) / max(before["mae"], 1e-12)
        return [Check("live_mae_increase", "pass" if rise <= checks.max_metric_drop else "fail", rise,
                      checks.max_metric_drop, f"champion {before['mae']:.4g}, challenger {after['mae']:.4g}")], [
            Compared("mae", before["mae"], after["mae"], lower_is_better=True)]
    over = {"precision_over": _classes_both_have(ours, theirs, 0, checks.min_class_labels),  # predicted
            "recall_over": _classes_both_have(ours, theirs, 1, checks.min_class_labels)}  # met
    before, after = live_metrics(ours, **over), live_metrics(theirs, **over)
    out, compared = [], []
    for metric, classes in (("accuracy", None), ("precision", over["precision_over"]), ("recall", over["recall_over"])):
        if classes is not None and not classes:
            out.append(Check(f"live_{metric}_drop", "skipped", None, checks.max_metric_drop,
                             f"no class with {checks.min_class_labels} labelled rows for both versions"))
            continue
        over_classes = f" over {', '.join(sorted(classes))}" if classes is not None else ""
        result = compare_quality(*_hits(ours, metric, classes), *_hits(theirs, metric, classes), checks.max_metric_drop,
                                 alpha, metric)
        out.append(_sequential_check(f"live_{metric}_drop", result, before[metric] - after[metric],
                                     checks.max_metric_drop,
                                     f"champion {before[metric]:.3f}, challenger {after[metric]:.3f}{over_classes}",
                                     f"{checks.max_metric_drop:g} tolerance", points=False))
        compared.append(Compared(metric, before[metric], after[metric]))
    return out, compared


def _hits(pairs: tuple, metric: str, classes: set[str] | None) -> tuple[int, int]:
    """A live metric as counts: right answers and labelled rows (accuracy), or the effective counts of macro
    precision (recall) over `classes`: the mean over each class of the right answers among the rows predicted as
    (labelled) that class."""
    truth, predicted = _as_labels([t for _, t in pairs]), _as_labels([p for p, _ in pairs])
    if classes is None:
        return sum(t == p for t, p in zip(truth, predicted)), len(pairs)
    side = predicted if metric == "precision" else truth
    return _effective_counts([(sum(s == c and t == p for s, t, p in zip(side, truth, predicted)), side.count(c))
                              for c in sorted(classes)])


def _effective_counts(per_class: list[tuple[int, int]]) -> tuple[int, int]:
    """The mean of several classes' proportions (hits, rows) as one proportion with the same mean and variance (Kish's
    effective sample size, on counts pseudo-counted as `mlray.rollout.sequential` does, and at most all the rows): a
    normal approximation, as the comparison itself is."""
    if len(per_class) == 1:
        return per_class[0]
    k, rows = len(per_class), sum(n for _, n in per_class)
    smoothed = [(hits + 1) / (n + 2) for hits, n in per_class]
    variance = sum(p * (1 - p) / n for p, (_, n) in zip(smoothed, per_class)) / k ** 2
    mean = sum(smoothed) / k
    effective = min(rows, max(1, round(mean * (1 - mean) / variance)))
    return round(effective * sum(hits / n for hits, n in per_class) / k), effective


def _predicts_numbers(records: list[dict]) -> bool:
    """Whether the version's predictions are numbers (a regression), judged on its first prediction."""
    first = next((r["prediction"] for r in records if r.get("prediction")), None)
    return first is not None and isinstance(json.loads(first), float)
