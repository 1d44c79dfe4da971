"""`monitor`: drift checks and live quality on served traffic, and the retraining they trigger."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mlray.spec.base import Duration, Section, parse_duration
from mlray.spec.secrets import ENV_REFERENCE

DURATION_KEYS = ("window", "poll_interval", "log_retention", "compact_every")
# live quality: higher is better, except the errors and the calibration gap
LIVE_METRICS = ("roc_auc", "precision", "recall", "ece", "accuracy", "macro_f1", "mae", "rmse")
LOWER_IS_BETTER = ("ece", "mae", "rmse")


class RetrainSpec(Section):
    """When drift or a quality drop retrains the model, and what the retraining job trains on."""

    min_drifted_features: int = Field(2, ge=1, description="a window counts as drifted with at least this many "
                                                           "drifted input columns (k)")
    on_score_drift: bool = Field(True, description="a window whose score distribution drifted counts as drifted too")
    drifted_windows: int = Field(2, ge=1, description="retrain when at least this many (m) ...")
    of_windows: int = Field(3, ge=1, description="... of the last n windows drifted (debounce)")
    max_quality_drop: float | None = Field(0.05, ge=0, description="retrain when live quality falls this far below "
                                                                   "the champion's offline test metric (None: never)")
    max_estimated_drop: float | None = Field(None, ge=0, description="retrain when a window's quality estimated "
                                                                     "before labels (its whole 90% interval) falls "
                                                                     "this far below the offline metric (None: never)")
    on_prior_shift: bool = Field(True, description="a window whose class shares (estimated before labels) moved "
                                                   "from the reference rows of the same hours (without a context: "
                                                   "from the validation split's) counts as drifted too")
    on_concept_drift: bool = Field(False, description="a window whose last labelled rows left the bands of the "
                                                      "quality estimated from their scores (concept drift) counts as "
                                                      "drifted too (the labels are the last quality_rows, so one "
                                                      "finding lasts until they turn over)")
    quality_metric: str | None = Field(None, description="the metric compared; default roc_auc (binary), accuracy "
                                                         "(multiclass), rmse (regression: a relative rise)")
    schedule: Duration | None = Field(None, description="also retrain on a fixed period, drift or not (e.g. 7d)")
    cooldown: Duration = Field(timedelta(hours=1), description="no trigger this long after the last one")
    max_per_day: int = Field(2, ge=1, description="at most this many retraining jobs in any 24 hours")
    mode: Literal["auto", "approval"] = Field("auto", description="approval: an incident waits for "
                                                                  "`mlray incidents approve ID`")
    source: str | None = Field(None, description="a landing folder (or s3:// URI) the job ingests first "
                                                 "(each file once)")
    window: Duration | None = Field(None, description="train only on rows whose event time is this recent (None: all)")
    # deprecated: accepted (the section forbids unknown keys, so removing it would break specs that set it) and ignored
    rollout_timeout: Duration = Field(timedelta(hours=2), deprecated=True,
                                      description="deprecated and ignored: the retraining job no longer follows the "
                                                  "rollout; the rollout records its outcome on the incident itself")

    @field_validator("schedule", "cooldown", "window", "rollout_timeout", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> timedelta | None:
        return None if value is None else parse_duration(value)

    @field_validator("quality_metric")
    @classmethod
    def _metric(cls, value: str | None) -> str | None:
        if value is not None and value not in LIVE_METRICS:
            raise ValueError(f"expected one of {', '.join(LIVE_METRICS)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _m_of_n(self) -> "RetrainSpec":
        if self.drifted_windows > self.of_windows:
            raise ValueError(f"drifted_windows ({self.drifted_windows}) cannot exceed of_windows ({self.of_windows})")
        return self


class ContextSpec(Section):
    """What a window is compared in: reference rows from the same period of the cycle as the window's rows."""

    column: str = Field(description="a timestamp column of the traffic (a feature's column)")
    period: Literal["hour_of_day", "day_of_week", "hour_of_week"] = Field(
        "hour_of_day", description="the cycle matched; hour_of_week needs a reference of thousands of rows")


class MonitorSpec(Section):
    """A long-lived actor that checks every window of served traffic against the champion's training data."""

    enabled: bool = Field(False, description="`mlray deploy` starts the monitor too")
    window_rows: int = Field(1000, ge=10, description="a window closes after this many served rows ...")
    window: Duration = Field(timedelta(minutes=15), description="... or this long after its first row, "
                                                                "whichever comes first")
    min_window_rows: int = Field(200, ge=10, description="a window closing on time with fewer rows waits for more")
    poll_interval: Duration = Field(timedelta(seconds=5), description="how often the actor reads the inference log")
    p_value: float = Field(0.01, gt=0, lt=1, description="a calm window's chance of a drift verdict: the columns' "
                                                         "tests at this level after the correction, the score's at "
                                                         "half of it")
    detectors: Literal["alibi", "scipy"] = Field("alibi", description="who runs the whole-window tests: Alibi "
                                                                   "Detect, or the same tests in plain SciPy (no "
                                                                   "alibi-detect licence or numpy < 2 pin needed; "
                                                                   "no multivariate test)")
    correction: Literal["bonferroni", "fdr"] = Field("bonferroni", description="multiple-testing correction over "
                                                                               "the input columns")
    columns: list[str] | None = Field(None, description="input columns checked for drift (default: every feature's "
                                                        "column but timestamps and dates, which always move)")
    context: Literal["auto", "none"] | ContextSpec = Field(
        "auto", description="seasonality: each window is compared with reference rows from the same hours of the day "
                            "(or the period named); auto: the first timestamp feature's column that takes the hour, "
                            "by hour of day; none: the whole reference")
    segment_q: float = Field(0.05, gt=0, lt=1, description="segments (each value of train.slices): the false "
                                                           "discovery rate over every segment and test of a window")
    reference_rows: int = Field(5000, ge=100, description="training rows packaged with each model as its "
                                                          "reference (matching to hours thins it; the tests' cost "
                                                          "grows with it)")
    multivariate: bool = Field(False, description="also MMD drift on the transformed inputs (torch; slow on CPU)")
    mmd_reference_rows: int = Field(500, ge=50, description="reference rows MMD compares against")
    mmd_permutations: int = Field(100, ge=10, description="permutations of the MMD test")
    quality_rows: int = Field(2000, ge=20, description="live quality: the last this many labelled rows per version")
    min_labels: int = Field(200, ge=10, description="labelled rows a version needs before its live quality counts")
    min_class_labels: int = Field(20, ge=1, description="binary: labelled rows of each class it needs too (a rare "
                                                        "class makes ROC-AUC and recall noisy)")
    log_retention: Duration = Field(timedelta(days=30), description="inference-log and label rows older than this "
                                                                    "are deleted by the monitor's upkeep")
    compact_every: Duration = Field(timedelta(hours=1), description="how often the monitor compacts the log's "
                                                                    "small files and applies the retention")
    alert_webhook: str | None = Field(None, description="an http(s) URL each alert is POSTed to as JSON; its "
                                                       "token may be ${NAME}, or the whole URL")
    retrain: RetrainSpec = Field(default_factory=RetrainSpec)

    @field_validator(*DURATION_KEYS, mode="before")
    @classmethod
    def _durations(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_validator("alert_webhook")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith(("http://", "https://")) or ENV_REFERENCE.fullmatch(value)):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _rows(self) -> "MonitorSpec":
        if self.min_window_rows > self.window_rows:
            raise ValueError(f"min_window_rows ({self.min_window_rows}) cannot exceed window_rows ({self.window_rows})")
        if self.multivariate and self.detectors == "scipy":
            raise ValueError("multivariate: true needs detectors: alibi (the MMD test has no SciPy twin)")
        return self
