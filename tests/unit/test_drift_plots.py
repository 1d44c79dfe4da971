"""The drift report's quality picture, drawn from reports held in memory: the estimate before labels against the
champion's realised metric per window makes a real PNG, and windows with nothing estimated draw too and say so."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image

from mlray.control.state import WindowReport
from mlray.monitor.plots import quality_png, quality_series

AT = datetime(2026, 11, 26, 12, 30, tzinfo=timezone.utc)


def window(seq: int, verdict: str = "ok", estimated: bool = True, labelled: bool = True) -> WindowReport:
    """A binary model's window (estimates and class shares when `estimated`, live metrics when `labelled`)."""
    auc = 0.9 - 0.03 * seq
    return WindowReport(
        seq=seq, epoch="e1", at=AT + timedelta(minutes=5 * seq), rows=500, champion="3", start=[4, 100 * seq],
        end=[4, 100 * seq + 100], columns=["amount"], p_values=[0.2], distances=[0.05], threshold=0.025,
        verdict=verdict,
        quality={"3": {"roc_auc": auc - 0.01, "roc_auc_se": 0.02, "precision": 0.7}} if labelled else {},
        estimated={"roc_auc": {"value": auc, "low": auc - 0.03, "high": auc + 0.03},
                   "precision": {"value": 0.72, "low": 0.68, "high": 0.76}} if estimated else {},
        priors={"no": {"value": 0.8, "low": 0.77, "high": 0.83},
                "yes": {"value": 0.2, "low": 0.17, "high": 0.23}} if estimated else {})


def regression_window(seq: int) -> WindowReport:
    """A regression model's window: live errors once labelled, no estimates before labels."""
    return WindowReport(seq=seq, epoch="e1", at=AT, rows=300, champion="1", start=[1, 0], end=[1, 300],
                        quality={"1": {"rmse": 2.1, "mae": 1.6}}, verdict="ok")


def png_notes(path) -> str:
    """The notes of a valid PNG of a readable size (its Description: what the windows lacked)."""
    assert path.exists() and path.stat().st_size > 10_000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 500 and image.height > 300
        return image.text["Description"]


@pytest.mark.parametrize("metric", ["roc_auc", "precision"])
def test_estimated_against_realised_per_window_draws_a_png(tmp_path, metric):
    reports = [window(2, "drift"), window(0), window(1), window(3, "drift", labelled=False)]
    path = quality_png(reports, metric, tmp_path / f"quality-{metric}.png")
    assert path == tmp_path / f"quality-{metric}.png"
    assert png_notes(path) == "complete"


def test_the_series_is_in_window_order_with_the_champions_realised_metric_and_the_positive_share():
    series = quality_series([window(2, "drift"), window(0), window(1, labelled=False)], "roc_auc")
    assert series.seqs == [0, 1, 2] and series.drift == [False, False, True] and series.positive == "yes"
    assert series.estimated[:, 0] == pytest.approx([0.9, 0.87, 0.84])
    assert series.realised[0].tolist() == pytest.approx([0.89, 0.02]) and np.isnan(series.realised[1]).all()
    assert series.priors[:, 0] == pytest.approx([0.2, 0.2, 0.2]) and series.notes == []


def test_windows_without_estimates_draw_and_say_so(tmp_path):
    path = quality_png([window(0, estimated=False), window(1, "drift", estimated=False)], "roc_auc",
                       tmp_path / "q.png")
    notes = png_notes(path)
    assert "no estimate of roc_auc before labels" in notes and "no estimated class shares" in notes
    assert "no realised" not in notes


def test_a_regression_model_draws_its_realised_error_and_says_nothing_was_estimated(tmp_path):
    path = quality_png([regression_window(0), regression_window(1)], "rmse", tmp_path / "q.png")
    notes = png_notes(path)
    assert "no estimate of rmse" in notes and "no realised" not in notes


def test_windows_with_nothing_to_draw_still_draw_and_say_so(tmp_path):
    notes = png_notes(quality_png([window(0, estimated=False, labelled=False)], "roc_auc", tmp_path / "q.png"))
    assert "no estimate of roc_auc" in notes and "no realised roc_auc" in notes
    assert quality_series([], "roc_auc").notes == ["no windows reported"]
    assert png_notes(quality_png([], "roc_auc", tmp_path / "empty.png")) == "no windows reported"


def test_the_drift_report_table_names_the_worst_segments_and_what_the_labels_said():
    from mlray.cli.monitor import _assumptions, _segments, _versions

    worst = {"worst": [{"column": "device", "value": "mobile", "evidence": 0.0012, "drifted": ["score", "amount"]},
                       {"column": "device", "value": "pos", "evidence": 0.6, "drifted": []}]}
    assert _segments(worst) == "device=mobile q 0.0012 (score, amount); device=pos q 0.6"
    assert _assumptions({"judged": True, "rows": 1800, "outside": ["recall", "f1"]}) == "outside: recall, f1"
    assert _assumptions({"judged": True, "rows": 1800, "outside": []}) == "within (1,800 rows)"
    assert _assumptions({"judged": False, "reason": "fewer than 20 labels of a class"}) == \
        "not judged: fewer than 20 labels of a class"
    versions = {"2": {"rows": 120, "shadow": True, "score_p_value": 0.41, "estimated": {}},
                "3": {"rows": 9, "shadow": False, "error": "FileNotFoundError: no package"}}
    assert _versions(versions, ("roc_auc",)) == "v2 (shadow) score p 0.41; v3 not checked: FileNotFoundError: no package"
