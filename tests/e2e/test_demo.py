"""The main job: `mlray demo` runs the data-plane walkthrough end to end."""

import json

from typer.testing import CliRunner

from mlray.cli import app


def test_demo_walkthrough(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["demo", "--dir", str(tmp_path / "demo"), "--rows", "3000"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "files skipped: 3 of 3; rows landed: 0" in out
    assert "passes all" in out
    assert "feature version" in out and "model inputs: 6 numeric, 6 categorical" in out
    reports = list((tmp_path / "demo" / ".mlray" / "reports" / "validation").glob("*.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["passed"]
    # a second run over the same folder ingests nothing new and still succeeds
    again = runner.invoke(app, ["demo", "--dir", str(tmp_path / "demo"), "--rows", "3000"], catch_exceptions=False)
    assert again.exit_code == 0 and "files skipped: 3 of 3" in again.stdout
