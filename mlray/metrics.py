"""Every Prometheus metric mlray exports, defined once. They go through Ray's metrics agent, so a
Prometheus server scraping the Ray cluster sees them (names prefixed `ray_`)."""

from __future__ import annotations

from functools import lru_cache

LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
SCORE_BOUNDARIES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


@lru_cache(maxsize=1)
def serving() -> dict:
    """The serving metrics (created once per process, inside a Serve replica)."""
    from ray.serve import metrics  # Ray Serve: loaded only in the replica that records them; importing this is Ray-free

    return {
        "requests": metrics.Counter("mlray_requests", "Prediction requests by model version and outcome.",
                                    tag_keys=("model_version", "outcome")),
        "latency": metrics.Histogram("mlray_request_latency_s", "Prediction latency in seconds, by model version.",
                                     boundaries=LATENCY_BOUNDARIES, tag_keys=("model_version",)),
        "score": metrics.Histogram("mlray_score", "Binary score or top-class confidence, by model version.",
                                   boundaries=SCORE_BOUNDARIES, tag_keys=("model_version",)),
        "batch": metrics.Histogram("mlray_batch_rows", "Rows per model call, by model version.",
                                   boundaries=BATCH_BOUNDARIES, tag_keys=("model_version",)),
        "weight": metrics.Gauge("mlray_traffic_weight", "Share of traffic routed to a model version.",
                                tag_keys=("model_version",)),
        "log_pending": metrics.Gauge("mlray_log_rows_pending", "Rows an ingress replica holds for a table of the lake "
                                     "(inference log, labels), not yet committed.", tag_keys=("table",)),
        "log_dropped": metrics.Counter("mlray_log_rows_dropped", "Rows dropped unwritten: the replica's buffer was full "
                                       "while the lake was unreachable (serve.log_buffer_rows).", tag_keys=("table",)),
        "log_rejected": metrics.Counter("mlray_log_rows_rejected", "Records a table cannot hold, written to its "
                                        "<table>_rejects table with their reason.", tag_keys=("table",)),
    }


@lru_cache(maxsize=1)
def rollout() -> dict:
    """The rollout controller's metrics (a plain Ray actor, so Ray's own metrics API)."""
    from ray.util import metrics  # Ray: loaded only in the actor that records them; importing this is Ray-free

    tags = ("model", "challenger")
    return {
        "step": metrics.Gauge("mlray_rollout_step", "The rollout's current step, from 1 (0: no rollout running).",
                              tag_keys=tags),
        "weight": metrics.Gauge("mlray_rollout_challenger_weight", "The challenger's share of traffic in the rollout.",
                                tag_keys=tags),
        "failures": metrics.Gauge("mlray_rollout_failed_analyses", "Failed analyses so far in the rollout.",
                                  tag_keys=tags),
    }


@lru_cache(maxsize=1)
def monitor() -> dict:
    """The drift monitor's metrics, per input column and per model version."""
    from ray.util import metrics  # Ray: loaded only in the actor that records them; importing this is Ray-free

    return {
        "p_value": metrics.Gauge("mlray_drift_p_value", "Drift test p-value of an input column in the last window.",
                                 tag_keys=("model", "feature")),
        "distance": metrics.Gauge("mlray_drift_distance", "Drift test statistic of an input column in the last window.",
                                  tag_keys=("model", "feature")),
        "drift": metrics.Gauge("mlray_drift_detected", "1 when the input column drifted in the last window.",
                               tag_keys=("model", "feature")),
        "score_p_value": metrics.Gauge("mlray_score_drift_p_value", "Score-distribution drift p-value in the last "
                                       "window, by the champion it was compared with.", tag_keys=("model", "model_version")),
        "score_drift": metrics.Gauge("mlray_score_drift_detected", "1 when the score distribution drifted.",
                                     tag_keys=("model", "model_version")),
        "quality": metrics.Gauge("mlray_live_quality", "Live quality on labelled feedback, by version and metric.",
                                 tag_keys=("model", "model_version", "metric")),
        "estimated": metrics.Gauge("mlray_estimated_quality", "Quality of the last window estimated before its labels "
                                   "arrive (bound: value, low, high of its 90% interval).",
                                   tag_keys=("model", "model_version", "metric", "bound")),
        "class_share": metrics.Gauge("mlray_class_share", "Each class's share of the last window estimated before its "
                                     "labels arrive (bound: value, low, high of its 90% interval).",
                                     tag_keys=("model", "model_version", "class", "bound")),
        "outside": metrics.Gauge("mlray_estimate_outside", "1 when the champion's last labelled rows left the band "
                                 "of the quality estimated from their scores (concept drift), by metric.",
                                 tag_keys=("model", "model_version", "metric")),
        "segments_flagged": metrics.Gauge("mlray_segments_flagged", "Segments (values of train.slices) flagged in the "
                                          "last window, of those tested (kind: flagged, tested).",
                                          tag_keys=("model", "kind")),
        "windows": metrics.Counter("mlray_drift_windows", "Windows checked, by verdict.", tag_keys=("model", "verdict")),
        "incidents": metrics.Counter("mlray_incidents", "Incidents opened, by cause.", tag_keys=("model", "cause")),
    }
