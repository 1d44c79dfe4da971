"""The monitoring-quality benchmark runs end to end on tiny sizes and reports every scenario (no speed or quality
assertions: those are the benchmark's own table)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_monitoring_benchmark_reports_every_scenario(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks.common
    from benchmarks.monitoring import SCENARIOS, TRAIN_DAYS, main
    from mlray.spec import MonitorSpec

    monkeypatch.setattr(benchmarks.common, "RESULTS", tmp_path)
    main(["--seeds", "2", "--rows-per-day", "3000"])
    result = json.loads((tmp_path / "monitoring.json").read_text())
    assert [r["scenario"] for r in result["results"]] == list(SCENARIOS)
    assert all(r["rows"] and r["summary"] for r in result["results"])
    assert len(result["table"]) == sum(len(r["rows"]) for r in result["results"])
    assert result["reference_rows"] == MonitorSpec().reference_rows  # the package's reference sample
    assert result["training"]["rows"] == TRAIN_DAYS * 3000 and result["training"]["weekday_coefficient_sd"] > 0
