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


def test_walkthrough_notebook_runs():
    """The notebook's code cells, in order, as one script."""
    from pathlib import Path

    notebook = json.loads((Path(__file__).parents[2] / "notebooks" / "data_plane.ipynb").read_text())
    source = "\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")
    scope: dict = {}
    exec(compile(source, "data_plane.ipynb", "exec"), scope)
    assert scope["report"].rows_read == 20_000
    assert scope["result"].passed
