"""One step's analysis: the challenger against the champion over the same interval of live traffic.

Checks: error rate, p99 latency ratio, the divergence of their score distributions (population
stability index), and, once enough labelled feedback has arrived, live accuracy, precision and
recall (or mean absolute error for regression). A check without enough data is 'waiting', which
neither passes nor fails a step; live quality without enough labels is 'skipped' unless the
spec requires labels.

Score divergence from the champion is evidence, not a veto. Beyond its threshold it fails the step only when nothing
explains it; it is 'noted' (counted like a pass, and named in the verdict with the evidence that decided) when the
challenger answers an incident (it was retrained because the world moved, so it is meant to score differently), or
when the labels show it at least as good as the champion on every live metric compared. A challenger that is worse
on labels is judged by the live-quality checks and their tolerance, not by how differently it scores.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from mlray.quality import label_metrics, regression_metrics
from mlray.spec import RolloutChecks

PSI_BINS = 10


# a check's status: 'pass', 'fail', 'waiting' (not enough data yet: the step neither passes nor fails), 'skipped'
# (optional and no data) or 'noted' (past its threshold, but other evidence outranks it: see `decided_by`). The step
# passes when every check is 'pass', 'skipped' or 'noted'.
NOT_BLOCKING = ("pass", "skipped", "noted")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # 'pass', 'fail', 'waiting', 'skipped' or 'noted' (see NOT_BLOCKING)
    value: float | None
    threshold: float
    detail: str = ""  # past its threshold: why it failed or was noted
    # the evidence that decided a check past its threshold: 'labels' (live quality against the champion's),
    # 'incident' (the challenger answers one and there are no labels yet) or 'threshold' (nothing else to go on)
    decided_by: str = ""


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
    def verdict(self) -> str:
        """'fail' if any check failed, 'pass' if all passed (or were skipped or noted), else 'waiting'."""
        if self.failed:
            return "fail"
        return "pass" if all(c.status in NOT_BLOCKING for c in self.checks) else "waiting"

    @property
    def notes(self) -> list[str]:
        """Each check past its threshold that did not fail the step, with the evidence that outranked it, e.g.
        'score_divergence 0.40 > 0.25 noted: answers incident X; live precision 0.910 >= champion 0.880'."""
        return [f"{c.name} {c.value:.2f} > {c.threshold:g} noted: {c.detail}" for c in self.noted]

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "champion_requests": self.champion_requests,
                "challenger_requests": self.challenger_requests, "incident": self.incident, "evidence": self.notes,
                "checks": [asdict(c) for c in self.checks]}


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


def _p99(values: list[float]) -> float:
    return float(np.percentile(values, 99)) if values else float("nan")


def analyze(champion: list[dict], challenger: list[dict], labels: dict[tuple[str, int], str],
            checks: RolloutChecks, min_requests: int, incident: str | None = None) -> Analysis:
    """`champion`/`challenger`: inference-log records (request_id, row, error, latency_ms, score, prediction, shadow);
    `labels`: (request_id, row) → the true label as text; `incident`: the incident the challenger answers (its
    retraining was triggered by drift or a quality drop), if any."""
    out = []
    n = len(challenger)
    enough = n >= min_requests and len(champion) >= 1
    errors = sum(1 for r in challenger if r.get("error")) / n if n else 0.0
    out.append(Check("error_rate", "waiting" if not enough else ("pass" if errors <= checks.max_error_rate else "fail"),
                     errors if n else None, checks.max_error_rate, f"{n} challenger rows"))
    ok_champion = [r for r in champion if not r.get("error")]
    ok_challenger = [r for r in challenger if not r.get("error")]
    ratio = None
    if enough and ok_champion and ok_challenger:
        ratio = _p99([r["latency_ms"] for r in ok_challenger]) / max(_p99([r["latency_ms"] for r in ok_champion]), 1e-3)
    out.append(Check("p99_latency_ratio", "waiting" if ratio is None else
                     ("pass" if ratio <= checks.max_p99_latency_ratio else "fail"), ratio, checks.max_p99_latency_ratio))
    champion_scores = np.array([r["score"] for r in ok_champion if r.get("score") is not None], dtype=float)
    challenger_scores = np.array([r["score"] for r in ok_challenger if r.get("score") is not None], dtype=float)
    scored = min(len(champion_scores), len(challenger_scores)) >= min_requests
    psi = population_stability(champion_scores, challenger_scores) if enough and scored else None
    quality, compared = _quality_checks(ok_champion, ok_challenger, labels, checks)
    out.append(divergence_check(psi, checks.max_divergence, compared, incident))
    out.extend(quality)
    return Analysis(out, len(champion), n, incident)


@dataclass(frozen=True)
class Compared:
    """One live metric of both versions on their labelled feedback."""
    metric: str
    champion: float
    challenger: float
    lower_is_better: bool = False

    @property
    def at_least_as_good(self) -> bool:
        return self.challenger <= self.champion if self.lower_is_better else self.challenger >= self.champion

    def __str__(self) -> str:
        sign = ("<=" if self.lower_is_better else ">=") if self.at_least_as_good else \
            (">" if self.lower_is_better else "<")
        return f"live {self.metric} {self.challenger:.3f} {sign} champion {self.champion:.3f}"


def divergence_check(psi: float | None, threshold: float, compared: list[Compared], incident: str | None) -> Check:
    """The score divergence (PSI) against the champion, weighed with the other evidence (see the module's docstring):
    within the threshold it passes; beyond it, it is 'noted' when the challenger answers an incident or the labels
    show it at least as good on every metric compared, else it fails as a veto."""
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


def _quality_checks(champion: list[dict], challenger: list[dict], labels: dict, checks: RolloutChecks
                    ) -> tuple[list[Check], list[Compared]]:
    """Live quality on labelled feedback, challenger against champion: a drop in accuracy, precision and recall
    (classification), or a relative rise in mean absolute error (regression), each at most max_metric_drop. Precision
    (recall) compares the classes both versions predicted (saw) at least min_class_labels times, so a rare class
    met once in a small sample does not decide the step. Also returns the metrics compared (none without enough
    labels), the evidence the divergence check weighs."""
    ours, theirs = _labelled(champion, labels), _labelled(challenger, labels)
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
        drop = before[metric] - after[metric]
        if classes is not None and not classes:
            out.append(Check(f"live_{metric}_drop", "skipped", None, checks.max_metric_drop,
                             f"no class with {checks.min_class_labels} labelled rows for both versions"))
            continue
        over_classes = f" over {', '.join(sorted(classes))}" if classes is not None else ""
        out.append(Check(f"live_{metric}_drop", "pass" if drop <= checks.max_metric_drop else "fail", drop,
                         checks.max_metric_drop,
                         f"champion {before[metric]:.3f}, challenger {after[metric]:.3f}{over_classes}"))
        compared.append(Compared(metric, before[metric], after[metric]))
    return out, compared
