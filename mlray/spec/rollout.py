"""`rollout`: a progressive rollout, declared."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator

from mlray.spec.base import Duration, Section, parse_duration


class RolloutChecks(Section):
    """What the challenger must show against the champion, on their traffic since the rollout began. Error rate, p99
    latency and live accuracy, precision and recall are always-valid sequential tests, looked at every tick, whose
    thresholds below are the tolerances (the effects to detect); divergence and a regression's error are plain
    thresholds (see `mlray.rollout.analysis`)."""

    max_error_rate: float = Field(0.02, ge=0, le=1, description="how many more failed requests than the champion's the "
                                                                "challenger may have, absolute (0.02: 2 points more)")
    max_p99_latency_ratio: float = Field(1.5, gt=0, description="how much slower than the champion the challenger may "
                                                                "be: challenger p99 / champion p99 (the slowdown to "
                                                                "detect)")
    max_divergence: float = Field(0.25, ge=0, description="population stability index between their score "
                                                          "distributions (a plain threshold)")
    max_metric_drop: float = Field(0.05, ge=0, description="live accuracy, precision and recall on labelled feedback: "
                                                           "how much lower than the champion's each may be, absolute "
                                                           "(the drop to detect; regression: how much higher its mean "
                                                           "absolute error may be, relative, a plain threshold)")
    alpha: float = Field(0.05, gt=0, lt=1, description="the chance that a rollout of a challenger no worse than the "
                                                       "champion is rolled back, over every look and check (split "
                                                       "evenly over the sequential checks; divergence is judged "
                                                       "apart)")
    min_labels: int = Field(30, ge=1, description="labelled rows per version before live quality is compared")
    min_class_labels: int = Field(5, ge=1, description="a class enters live precision (recall) once both versions "
                                                       "predicted (met) it this often among their labelled rows")
    require_labels: bool = Field(False, description="a step waits for min_labels (else it may pass without them)")


class RolloutSpec(Section):
    """A progressive rollout, Flagger-like: steps, an interval, checks, a failure limit."""

    steps: list[Union[Literal["shadow"], Annotated[float, Field(gt=0, le=100)]]] = Field(
        default_factory=lambda: ["shadow", 5.0, 25.0, 50.0, 100.0], min_length=1,
        description="'shadow' (mirrored, never answered) or the challenger's weight in percent")
    interval: Duration = Field(timedelta(minutes=1), description="how long each step runs at least (the checks look "
                                                                 "at every tick)")
    min_requests: int = Field(50, ge=1, description="challenger requests the rollout needs before its error rate is "
                                                    "compared (and a step can pass)")
    failure_limit: int = Field(2, ge=1, description="failed looks (each on new traffic) before an automatic rollback")
    shadow_fraction: float = Field(1.0, gt=0, le=1)
    checks: RolloutChecks = Field(default_factory=RolloutChecks)

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> timedelta:
        return parse_duration(value)
