"""The drift report's pictures: reference against current distributions of the drifted columns of one window, each
column's p-value over the windows, and a metric's estimate before labels against its realised value per window."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from mlray.control.state import WindowReport, WindowVerdict
from mlray.monitor.reference import Reference

MAX_PANELS = 6


def _pyplot():
    import matplotlib  # heavy: matplotlib (~0.7 s), and Agg must be chosen before pyplot loads; only drawing needs it

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt  # heavy: matplotlib, as above; after the backend is chosen

    return plt


def distributions_png(reference: Reference, window: pa.Table, report: WindowReport, path: Path) -> Path:
    """Reference vs window histograms of the drifted columns (else the ones with the lowest p-values)."""
    plt = _pyplot()
    ranked = sorted(zip(report.columns, report.p_values), key=lambda cp: cp[1])
    columns = list(report.drifted)[:MAX_PANELS] or [c for c, _ in ranked[:3]]
    encodings = {e.name: e for e in reference.encodings}
    figure, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4), squeeze=False)
    for axis, column in zip(axes[0], columns):
        encoding = encodings[column]
        before, after = encoding.encode(reference.sample.column(column)), encoding.encode(window.column(column))
        p_value = dict(ranked)[column]
        if encoding.kind == "numeric":
            bins = np.histogram_bin_edges(np.concatenate([before, after]), bins=30)
            axis.hist(before, bins=bins, alpha=0.55, density=True, label="reference")
            axis.hist(after, bins=bins, alpha=0.55, density=True, label=f"window {report.seq}")
        else:
            labels = ["(other)", *encoding.vocabulary]
            counts = [np.bincount(v.astype(int), minlength=len(labels)) / max(len(v), 1) for v in (before, after)]
            x = np.arange(len(labels))
            axis.bar(x - 0.2, counts[0], width=0.4, label="reference")
            axis.bar(x + 0.2, counts[1], width=0.4, label=f"window {report.seq}")
            axis.set_xticks(x, labels, rotation=60, fontsize=7)
        axis.set_title(f"{column} (p={p_value:.2g})", fontsize=9)
        axis.legend(fontsize=7)
    figure.suptitle(f"window {report.seq}: {report.rows} rows against v{report.champion}'s reference")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def p_values_png(reports: list[WindowReport], path: Path) -> Path:
    """Each column's p-value (and the score's) per window, on a log scale, with the corrected threshold."""
    plt = _pyplot()
    ordered = sorted(reports, key=lambda r: r.seq)
    figure, axis = plt.subplots(figsize=(9, 4.5))
    seqs = [r.seq for r in ordered]
    for column in ordered[-1].columns:
        values = [r.p_values[r.columns.index(column)] if column in r.columns else np.nan for r in ordered]
        axis.plot(seqs, np.clip(values, 1e-12, 1), marker=".", label=column)
    axis.plot(seqs, [np.clip(r.score_p_value if r.score_p_value is not None else np.nan, 1e-12, 1)
                     for r in ordered], color="black", linewidth=2, label="score")
    axis.plot(seqs, [r.threshold for r in ordered], color="red", linestyle="--", label="threshold")
    axis.set_yscale("log")
    axis.set_xlabel("window")
    axis.set_ylabel("p-value")
    axis.legend(fontsize=7, ncol=2, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


@dataclass
class QualitySeries:
    """What `quality_png` draws, one entry per window (NaN where a window lacks it), and what it lacks, as notes."""

    seqs: list[int]
    estimated: np.ndarray  # windows x (value, low, high): the estimate before labels, with its 90% interval
    realised: np.ndarray  # windows x (value, standard error): the champion's live metric
    priors: np.ndarray  # windows x (value, low, high): the estimated share of the positive class
    drift: list[bool]
    positive: str | None
    notes: list[str] = field(default_factory=list)


def _interval(estimate: dict[str, float] | None) -> tuple[float, float, float]:
    if not estimate:
        return (np.nan, np.nan, np.nan)
    return (estimate.get("value", np.nan), estimate.get("low", np.nan), estimate.get("high", np.nan))


def _realised(report: WindowReport, metric: str) -> tuple[float, float]:
    live = report.quality.get(report.champion, {})
    return (live.get(metric, np.nan), live.get(f"{metric}_se", np.nan))


def _positive_class(reports: list[WindowReport]) -> str | None:
    """The positive class of a binary model's priors: the last class (classes are kept in the model's order)."""
    return next((list(r.priors)[-1] for r in reversed(reports) if r.priors), None)


def quality_series(reports: list[WindowReport], metric: str, positive: str | None = None) -> QualitySeries:
    """The windows' estimated and realised `metric` and positive-class share, oldest window first."""
    ordered = sorted(reports, key=lambda r: r.seq)
    positive = positive or _positive_class(ordered)
    series = QualitySeries(
        seqs=[r.seq for r in ordered],
        estimated=np.array([_interval(r.estimated.get(metric)) for r in ordered], float).reshape(-1, 3),
        realised=np.array([_realised(r, metric) for r in ordered], float).reshape(-1, 2),
        priors=np.array([_interval(r.priors.get(positive)) for r in ordered], float).reshape(-1, 3),
        drift=[r.verdict == WindowVerdict.DRIFT for r in ordered], positive=positive)
    series.notes = _missing(series, metric)
    return series


def _missing(series: QualitySeries, metric: str) -> list[str]:
    """One line for each thing the windows lack."""
    if not series.seqs:
        return ["no windows reported"]
    notes = []
    if np.isnan(series.estimated[:, 0]).all():
        notes.append(f"no estimate of {metric} before labels (CBPE: binary models with a calibrator only)")
    if np.isnan(series.realised[:, 0]).all():
        notes.append(f"no realised {metric}: no window had enough labelled feedback for its champion")
    if np.isnan(series.priors[:, 0]).all():
        notes.append("no estimated class shares (BBSE: binary models only)")
    return notes


def _mark_drift(axis, series: QualitySeries) -> None:
    """A shaded column behind each window whose verdict was drift."""
    for i, seq in enumerate(s for s, drifted in zip(series.seqs, series.drift) if drifted):
        axis.axvspan(seq - 0.5, seq + 0.5, color="tab:red", alpha=0.12, linewidth=0,
                     label="drift verdict" if i == 0 else None)


def _say(axis, text: str) -> None:
    axis.text(0.5, 0.5, text, transform=axis.transAxes, ha="center", va="center", fontsize=9, wrap=True,
              color="dimgray")


def _draw_quality(axis, series: QualitySeries, metric: str) -> None:
    """The estimate as a line in its 90% band, the champion's realised metric as points with ±2 standard errors."""
    seqs, (value, low, high) = np.array(series.seqs), series.estimated.T
    if not np.isnan(value).all():
        axis.fill_between(seqs, low, high, color="tab:blue", alpha=0.2, label="estimated, 90% interval")
        axis.plot(seqs, value, color="tab:blue", marker=".", label="estimated before labels")
    realised, error = series.realised.T
    if not np.isnan(realised).all():
        axis.errorbar(seqs, realised, yerr=np.where(np.isnan(error), 0.0, 2 * error), fmt="o", color="black",
                      capsize=3, markersize=4, label="realised (champion, ±2 se)")
    lacking = [n for n in series.notes if "class shares" not in n]
    if np.isnan(value).all() and np.isnan(realised).all():
        _say(axis, f"nothing to draw for {metric}:\n" + "\n".join(lacking))
    elif lacking:
        axis.text(0.01, 0.98, "\n".join(lacking), transform=axis.transAxes, ha="left", va="top", fontsize=7,
                  color="dimgray")
    axis.set_ylabel(metric)


def _draw_priors(axis, series: QualitySeries) -> None:
    """The estimated share of the positive class in its 90% band."""
    seqs, (value, low, high) = np.array(series.seqs), series.priors.T
    if np.isnan(value).all():
        _say(axis, "no estimated class shares (BBSE: binary models only)")
    else:
        axis.fill_between(seqs, low, high, color="tab:green", alpha=0.2, label="90% interval")
        axis.plot(seqs, value, color="tab:green", marker=".", label=f"class {series.positive}")
    axis.set_ylabel(f"share of class {series.positive}" if series.positive else "class share")
    axis.set_xlabel("window")


def quality_png(reports: list[WindowReport], metric: str, path: Path, positive: str | None = None) -> Path:
    """Per window, `metric` estimated before labels (90% band) against the champion's realised value (±2 standard
    errors), windows judged drifted shaded, and below the estimated share of the positive class. What the windows
    lack is said in the figure and in the PNG's Description."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator  # heavy: matplotlib, as above; after the backend is chosen

    series = quality_series(reports, metric, positive)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, height_ratios=(2, 1))
    _draw_quality(top, series, metric)
    _draw_priors(bottom, series)
    for axis in (top, bottom):
        _mark_drift(axis, series)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if series.seqs:
            axis.set_xlim(min(series.seqs) - 0.5, max(series.seqs) + 0.5)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, loc="best")
    top.set_title(f"{metric}: estimated before labels against realised, per window", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110, metadata={"Description": "\n".join(series.notes) or "complete"})
    plt.close(figure)
    return Path(path)
