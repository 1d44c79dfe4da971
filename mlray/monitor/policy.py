"""The retraining policy, as a pure function of what the monitor has seen and what it already started.

A window counts as drifted when at least `min_drifted_features` input columns drifted, or the score distribution
did (`on_score_drift`), or a class share estimated before labels moved (`on_prior_shift`), or the last labels left
the bands of the quality estimated from their scores (`on_concept_drift`). Retrain when m of the last
n windows drifted, when the champion's live quality fell more than `max_quality_drop` below its offline test metric,
when the last window's quality estimated before labels did so by more than `max_estimated_drop`, or when the schedule
says so; never while an incident is open, within the cooldown of the last trigger, or beyond `max_per_day` in 24
hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mlray.spec.monitor import RetrainSpec


@dataclass(frozen=True)
class Trigger:
    cause: str  # 'drift', 'quality' or 'schedule'
    detail: str
    evidence: dict


def window_drifted(retrain: RetrainSpec, window: dict) -> bool:
    """`window`: a history entry ({'drifted': [columns], 'score_drift': bool, 'prior_shift': [classes], ...})."""
    return (len(window["drifted"]) >= retrain.min_drifted_features or (retrain.on_score_drift and window["score_drift"])
            or (retrain.on_prior_shift and bool(window.get("prior_shift")))
            or (retrain.on_concept_drift and bool(window.get("concept_drift"))))


def decide(retrain: RetrainSpec, history: list[dict], quality_drop: float | None, now: datetime,
           triggered: list[datetime], open_incident: str | None, schedule_due: bool) -> tuple[Trigger | None, str]:
    """(a trigger or None, why a trigger was held back: '' when nothing called for one). `history`: the last windows,
    oldest first; `triggered`: when earlier triggers fired; `quality_drop`: the champion's live drop on the policy's
    metric (None: not enough labels)."""
    trigger = _cause(retrain, history, quality_drop, schedule_due)
    if trigger is None:
        return None, ""
    if open_incident is not None:
        return None, f"incident {open_incident} is still open"
    if triggered and now - max(triggered) < retrain.cooldown:
        return None, f"cooldown: the last retraining started at {max(triggered).isoformat(timespec='seconds')}"
    recent = [t for t in triggered if now - t < timedelta(days=1)]
    if len(recent) >= retrain.max_per_day:
        return None, f"{len(recent)} retraining jobs in the last 24 hours (max_per_day {retrain.max_per_day})"
    return trigger, ""


def _cause(retrain: RetrainSpec, history: list[dict], quality_drop: float | None, schedule_due: bool) -> Trigger | None:
    last = history[-retrain.of_windows:]
    drifted = [w for w in last if window_drifted(retrain, w)]
    if len(drifted) >= retrain.drifted_windows:
        columns = sorted({c for w in drifted for c in w["drifted"]})
        scores = sum(1 for w in drifted if w["score_drift"])
        priors = sum(1 for w in drifted if w.get("prior_shift"))
        concept = sum(1 for w in drifted if w.get("concept_drift"))
        shares = (f"; class shares moved in {priors}" if priors else "") + \
            (f"; labels outside the estimate in {concept}" if concept else "")
        return Trigger("drift", f"{len(drifted)} of the last {len(last)} windows drifted (columns: "
                                f"{', '.join(columns) or 'none'}; score drift in {scores}{shares})",
                       {"windows": [w["seq"] for w in drifted], "columns": columns, "score_drift_windows": scores}
                       | ({"prior_shift_windows": priors} if priors else {}))
    if quality_drop is not None and retrain.max_quality_drop is not None and quality_drop > retrain.max_quality_drop:
        return Trigger("quality", f"live quality {quality_drop:.3f} below the champion's offline metric (max "
                                  f"{retrain.max_quality_drop:g})", {"quality_drop": quality_drop,
                                                                     "windows": [w["seq"] for w in last[-1:]]})
    estimated = last[-1].get("estimated_drop") if last else None
    if estimated is not None and retrain.max_estimated_drop is not None and estimated > retrain.max_estimated_drop:
        return Trigger("estimated_quality", f"quality estimated before labels {estimated:.3f} below the champion's "
                                            f"offline metric (max {retrain.max_estimated_drop:g})",
                       {"estimated_drop": estimated, "windows": [last[-1]["seq"]]})
    if schedule_due:
        return Trigger("schedule", f"scheduled every {retrain.schedule}", {"windows": [w["seq"] for w in last[-1:]]})
    return None
