"""Checking one window: Alibi Detect's drift tests against the serving champion's reference and the live quality of
every version, into the window's report (written once to `drift_reports`), then published as metrics and alerts."""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlray.control.clock import Clock
from mlray.control.ports import ServingView
from mlray.control.state import MonitorCheckpoint, WindowReport, WindowVerdict
from mlray.lake import Lake
from mlray.lake.inference import flat_inputs
from mlray.metrics import monitor as ray_gauges
from mlray.monitor.alerts import alert
from mlray.monitor.context import context_of
from mlray.monitor.detectors import Detectors, DriftResult
from mlray.monitor.estimated import WindowEstimates, check_assumptions, estimate_window, logged_probabilities
from mlray.monitor.live import DEFAULT_METRIC, LiveQuality, quality_drop
from mlray.monitor.policy import window_drifted
from mlray.monitor.reference import Reference, load_reference
from mlray.monitor.segments import check_segments, labelled_rows
from mlray.monitor.versions import ServedVersions
from mlray.monitor.windows import Cursor
from mlray.spec import ProjectSpec
from mlray.window_reports import read_reports, write_report

log = logging.getLogger(__name__)
SHOWN_SEGMENTS = 5  # the worst segments a report keeps


class WindowChecks:
    """The drift tests of the serving champion (built when the champion changes, else reused) and the report of a
    window. `load_reference` and `make_detectors` default to the packaged reference (MLflow) and Alibi Detect."""

    def __init__(self, spec: ProjectSpec, lake: Lake, serving: ServingView, clock: Clock,
                 load_reference: Callable[[ProjectSpec, str], Reference] = load_reference,
                 make_detectors: Callable[..., Detectors] = Detectors):
        self.spec, self.monitor_rules, self.lake, self.serving, self.clock = spec, spec.monitor, lake, serving, clock
        self.load_reference, self.make_detectors = load_reference, make_detectors
        self.context = context_of(spec)  # seasonality: what each window's reference rows are matched on
        self.detectors: Detectors | None = None
        self.champion: str | None = None  # read from the serving view once per step, when a window closes
        self.versions = ServedVersions(spec.monitor, self.context, lambda version: self.load_reference(spec, version),
                                       make_detectors)

    def begin_step(self) -> None:
        self.champion = None

    def report(self, window: pa.Table, start: Cursor, end: Cursor, checkpoint: MonitorCheckpoint, live: LiveQuality,
               resuming: bool) -> WindowReport:
        """The window's report: the one already written when `resuming` (a monitor that died before its checkpoint
        was saved reported it), else checked now and written."""
        found = read_reports(self.lake, checkpoint.epoch, checkpoint.seq) if resuming else []
        if found:
            return found[0]
        report = self.check(window, start, end, checkpoint, live)
        write_report(self.lake, report)
        return report

    def check(self, window: pa.Table, start: Cursor, end: Cursor, checkpoint: MonitorCheckpoint,
              live: LiveQuality) -> WindowReport:
        reference = self.reference(checkpoint)
        served = window.filter(pc.and_(pc.is_null(window.column("error")), pc.is_valid(window.column("score"))))
        answered = champion_rows(served, reference.version)
        scores = answered.column("score").to_numpy()
        started = time.perf_counter()
        answered_inputs = flat_inputs(answered)
        result = self.detectors.check(flat_inputs(window), scores, answered_inputs)
        seconds = time.perf_counter() - started
        quality = self.live_quality(live, reference)
        metric = self.monitor_rules.retrain.quality_metric or DEFAULT_METRIC[reference.task]
        drop = quality_drop(quality.get(reference.version, {}), reference.offline, metric)
        estimates = self.estimates(reference, answered, scores, result, checkpoint.seq)
        labelled = live.labelled_probabilities(reference.version) if reference.task == "multiclass" else \
            live.labelled(reference.version)
        assumptions = check_assumptions(reference, labelled, seed=checkpoint.seq)
        estimated_drop = None if assumptions.concept_drift else estimates.drop(metric, reference.offline)
        versions = self.versions.check(served, reference.version, seed=checkpoint.seq)
        segments = self.segments(reference, answered_inputs, scores, result, checkpoint.seq, live)
        times = window.column("at")
        entry = {"drifted": result.drifted, "score_drift": result.score_drift, "prior_shift": estimates.prior_shift,
                 "concept_drift": assumptions.concept_drift}
        verdict = WindowVerdict.DRIFT if window_drifted(self.monitor_rules.retrain, entry) else \
            WindowVerdict.OK if result.judged else WindowVerdict.UNSEEN
        return WindowReport(seq=checkpoint.seq, epoch=checkpoint.epoch, at=self.clock.now(),
                            first_row_at=pc.min(times).as_py(), last_row_at=pc.max(times).as_py(),
                            rows=window.num_rows, champion=reference.version, start=start.to_list(),
                            end=end.to_list(), columns=result.columns, p_values=result.p_values,
                            distances=result.distances, threshold=result.threshold, drifted=result.drifted,
                            score_p_value=result.score_p_value, score_distance=result.score_distance,
                            score_drift=result.score_drift, mmd_p_value=result.mmd_p_value,
                            mmd_drift=result.mmd_drift, quality=quality, quality_drop=drop, verdict=verdict,
                            seconds=seconds, context=result.context, estimated=estimates.quality,
                            estimated_drop=estimated_drop, priors=estimates.priors,
                            prior_shift=estimates.prior_shift, versions=versions,
                            prior_source=estimates.prior_source or None, source_priors=estimates.source_priors,
                            assumptions=assumptions.to_dict(), segments=segments)

    @staticmethod
    def estimates(reference: Reference, answered: pa.Table, scores: np.ndarray, result: DriftResult,
                  seq: int) -> WindowEstimates:
        """The champion's quality and class shares estimated before labels. With a context, the class shares are
        judged against the reference rows of the window's periods (none matched: not judged); without one, against
        the validation split's. A multiclass window is estimated from its class probabilities, unless a row lacks
        them (logged before the inference log kept them)."""
        if reference.task == "multiclass":
            probabilities = logged_probabilities(answered)
            if probabilities is None:
                return WindowEstimates()
            matched = None if result.context is None else \
                reference.probabilities[result.matched_rows] if result.matched_rows is not None and \
                reference.probabilities is not None else np.zeros((0, len(reference.classes)))
            return estimate_window(reference, scores, seed=seq, window_rows=result.scored_rows,
                                   probabilities=probabilities, matched_reference_probabilities=matched)
        matched = None if result.context is None else \
            result.reference_scores if result.reference_scores is not None else np.zeros(0)
        return estimate_window(reference, scores, seed=seq, matched_reference_scores=matched,
                               window_rows=result.scored_rows)

    def segments(self, reference: Reference, inputs: pa.Table, scores: np.ndarray, result: DriftResult,
                 seq: int, live: LiveQuality) -> dict:
        """The worst segments of `train.slices` in the champion's answers (matched to the window's periods like its
        score test), with the live ROC-AUC of each on the champion's last labelled rows (binary): what
        `mlray monitor status` and the drift report show; {} without slices."""
        slices = self.spec.train.slices
        if not slices or not inputs.num_rows:
            return {}
        if result.scored_rows is not None:
            inputs, scores = inputs.filter(pa.array(result.scored_rows)), scores[result.scored_rows]
        labelled = labelled_rows(reference.classes, live.segmented(reference.version)) \
            if reference.task == "binary" else None
        found = check_segments(reference, inputs, scores, slices, q=self.monitor_rules.segment_q, seed=seq,
                               reference_rows=result.matched_rows, labelled=labelled)
        return {"tested": len(found.segments), "flagged": [[s.column, s.value] for s in found.flagged],
                "worst": found.summary(SHOWN_SEGMENTS), "unseen": found.unseen, "missing": found.missing}

    def live_quality(self, live: LiveQuality, reference: Reference) -> dict[str, dict[str, float]]:
        rules = self.monitor_rules
        return live.metrics(reference.task, reference.classes, reference.threshold, rules.min_labels,
                            rules.min_class_labels)

    def reference(self, checkpoint: MonitorCheckpoint) -> Reference:
        """The serving champion's reference; its detectors are rebuilt when the champion changed (and the checkpoint
        names the new one)."""
        champion = self.champion = self.champion or self.serving.champion()
        if champion is None:
            raise RuntimeError(f"model '{self.spec.name}' has no champion to compare traffic with")
        if self.detectors is None or self.detectors.reference.version != champion:
            log.info("building the drift reference of %s v%s", self.spec.name, champion)
            self.detectors = self.make_detectors(self.load_reference(self.spec, champion), self.monitor_rules,
                                                 context=self.context)
            checkpoint.champion = champion
        return self.detectors.reference


class ReportPublisher:
    """A window's report as gauges (`gauges`: the monitor's metrics, Ray's by default) and, on drift, an alert."""

    def __init__(self, spec: ProjectSpec, gauges: Callable[[], dict] = ray_gauges):
        self.spec, self.gauges = spec, gauges

    def publish(self, report: WindowReport) -> None:
        gauges, model = self.gauges(), self.spec.name
        for column, p, d in zip(report.columns, report.p_values, report.distances):
            tags = {"model": model, "feature": column}
            gauges["p_value"].set(p, tags=tags)
            gauges["distance"].set(d, tags=tags)
            gauges["drift"].set(float(column in report.drifted), tags=tags)
        if report.score_p_value is not None:
            tags = {"model": model, "model_version": report.champion}
            gauges["score_p_value"].set(report.score_p_value, tags=tags)
            gauges["score_drift"].set(float(report.score_drift), tags=tags)
        for version, metrics in report.quality.items():
            for metric, value in metrics.items():
                gauges["quality"].set(value, tags={"model": model, "model_version": version, "metric": metric})
        self._estimates(gauges, report.champion, report.estimated, report.priors)
        if report.assumptions.get("judged"):
            for metric in report.assumptions["metrics"]:
                gauges["outside"].set(float(metric in report.assumptions["outside"]),
                                      tags={"model": model, "model_version": report.champion, "metric": metric})
        if report.segments:
            for kind, count in (("flagged", len(report.segments["flagged"])), ("tested", report.segments["tested"])):
                gauges["segments_flagged"].set(float(count), tags={"model": model, "kind": kind})
        for version, found in report.versions.items():  # challengers and shadows, against their own references
            if found.get("score_p_value") is not None:
                tags = {"model": model, "model_version": version}
                gauges["score_p_value"].set(found["score_p_value"], tags=tags)
                gauges["score_drift"].set(float(found["score_drift"]), tags=tags)
            self._estimates(gauges, version, found.get("estimated", {}), found.get("priors", {}))
        gauges["windows"].inc(tags={"model": model, "verdict": report.verdict.value})
        if report.verdict == WindowVerdict.DRIFT:
            alert(model, "drift", f"window {report.seq}: drifted columns {', '.join(report.drifted) or 'none'}"
                                  f"; score drift {report.score_drift}", summary(report),
                  self.spec.monitor.alert_webhook)


    def _estimates(self, gauges: dict, version: str, estimated: dict, priors: dict) -> None:
        for gauge, label, estimates in (("estimated", "metric", estimated), ("class_share", "class", priors)):
            for name, bounds in estimates.items():
                for bound, value in bounds.items():
                    gauges[gauge].set(value, tags={"model": self.spec.name, "model_version": version, label: name,
                                                   "bound": bound})


def champion_rows(served: pa.Table, champion: str) -> pa.Table:
    """The rows the champion answered in the window (not another version's, nor its shadow calls)."""
    return served.filter(pc.and_(pc.equal(served.column("model_version"), champion), pc.invert(served.column("shadow"))))


def history_entry(report: WindowReport) -> dict:
    """What the checkpoint keeps of a window for the retraining policy."""
    return {"seq": report.seq, "drifted": list(report.drifted), "score_drift": report.score_drift,
            "quality_drop": report.quality_drop, "rows": report.rows, "prior_shift": list(report.prior_shift),
            "estimated_drop": report.estimated_drop,
            "concept_drift": bool(report.assumptions.get("outside")),
            "segments": report.segments.get("flagged", []),
            "versions": {v: bool(found.get("score_drift")) for v, found in report.versions.items()}}


def summary(report: WindowReport) -> dict:
    """The window in brief, as `Monitor.step` returns it and a drift alert carries it."""
    brief = report.model_dump(mode="json", include={"seq", "rows", "champion", "drifted", "score_drift",
                                                    "score_p_value", "verdict", "quality_drop"})
    return brief | {"min_p_value": float(np.min(report.p_values)) if report.p_values else None}
