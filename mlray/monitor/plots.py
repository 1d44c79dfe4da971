"""The drift report's pictures: reference against current distributions of the drifted columns of one window, and
each column's p-value over the windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from mlray.control.state import WindowReport
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
