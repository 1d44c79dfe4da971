"""One step's analysis: the challenger against the champion over the same interval of live traffic.

Checks: error rate, p99 latency ratio, the divergence of their score distributions (population
stability index), and, once enough labelled feedback has arrived, live accuracy, precision and
recall (or mean absolute error for regression). A check without enough data is 'waiting', which
neither passes nor fails a step; live quality without enough labels is 'skipped' unless the
spec requires labels.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from mlray.quality import label_metrics, regression_metrics
from mlray.spec import RolloutChecks

PSI_BINS = 10


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # 'pass', 'fail', 'waiting' (not enough data yet) or 'skipped' (optional and no data)
    value: float | None
    threshold: float
    detail: str = ""


@dataclass(frozen=True)
class Analysis:
    checks: list[Check]
    champion_requests: int
    challenger_requests: int

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def verdict(self) -> str:
        """'fail' if any check failed, 'pass' if all passed, else 'waiting'."""
        if self.failed:
            return "fail"
        return "pass" if all(c.status in ("pass", "skipped") for c in self.checks) else "waiting"

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "champion_requests": self.champion_requests,
                "challenger_requests": self.challenger_requests, "checks": [asdict(c) for c in self.checks]}


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
            checks: RolloutChecks, min_requests: int) -> Analysis:
    """`champion`/`challenger`: inference-log records (request_id, row, error, latency_ms, score, prediction, shadow);
    `labels`: (request_id, row) → the true label as text."""
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
    out.append(Check("score_divergence", "waiting" if psi is None else ("pass" if psi <= checks.max_divergence else "fail"),
                     psi, checks.max_divergence, "population stability index"))
    out.extend(_quality_checks(ok_champion, ok_challenger, labels, checks))
    return Analysis(out, len(champion), n)


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


def _quality_checks(champion: list[dict], challenger: list[dict], labels: dict, checks: RolloutChecks) -> list[Check]:
    """Live quality on labelled feedback, challenger against champion: a drop in accuracy, precision and recall
    (classification), or a relative rise in mean absolute error (regression), each at most max_metric_drop. Precision
    (recall) compares the classes both versions predicted (saw) at least min_class_labels times, so a rare class
    met once in a small sample does not decide the step."""
    ours, theirs = _labelled(champion, labels), _labelled(challenger, labels)
    if min(len(ours), len(theirs)) < checks.min_labels:
        return [Check("live_accuracy_drop", "waiting" if checks.require_labels else "skipped", None,
                      checks.max_metric_drop,
                      f"labels: champion {len(ours)}, challenger {len(theirs)} (need {checks.min_labels} each)")]
    if _regression(ours + theirs):
        before, after = live_metrics(ours), live_metrics(theirs)
        rise = (after["mae"] - before["mae"]) / max(before["mae"], 1e-12)
        return [Check("live_mae_increase", "pass" if rise <= checks.max_metric_drop else "fail", rise,
                      checks.max_metric_drop, f"champion {before['mae']:.4g}, challenger {after['mae']:.4g}")]
    over = {"precision_over": _classes_both_have(ours, theirs, 0, checks.min_class_labels),  # predicted
            "recall_over": _classes_both_have(ours, theirs, 1, checks.min_class_labels)}  # met
    before, after = live_metrics(ours, **over), live_metrics(theirs, **over)
    out = []
    for metric, classes in (("accuracy", None), ("precision", over["precision_over"]), ("recall", over["recall_over"])):
        drop = before[metric] - after[metric]
        if classes is not None and not classes:
            out.append(Check(f"live_{metric}_drop", "skipped", None, checks.max_metric_drop,
                             f"no class with {checks.min_class_labels} labelled rows for both versions"))
            continue
        compared = f" over {', '.join(sorted(classes))}" if classes is not None else ""
        out.append(Check(f"live_{metric}_drop", "pass" if drop <= checks.max_metric_drop else "fail", drop,
                         checks.max_metric_drop, f"champion {before[metric]:.3f}, challenger {after[metric]:.3f}{compared}"))
    return out
