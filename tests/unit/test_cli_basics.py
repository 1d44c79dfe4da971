"""CLI commands that need no Ray: help, init, and spec errors."""

import pytest
from typer.testing import CliRunner

from mlray.cli import app
from mlray.spec import load_spec

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["init"], ["ingest"], ["validate"], ["generate"], ["demo"],
                                     ["features"], ["features", "fit"], ["features", "show"],
                                     ["tables"], ["tables", "list"], ["tables", "history"], ["tables", "show"],
                                     ["train"], ["models"], ["models", "list"], ["models", "show"], ["models", "alias"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.stdout


def test_init_writes_a_loadable_spec_and_never_overwrites(tmp_path):
    path = tmp_path / "mlray.yaml"
    assert runner.invoke(app, ["init", str(path), "--name", "shop"]).exit_code == 0
    assert load_spec(path).name == "shop"
    again = runner.invoke(app, ["init", str(path)])
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_generate_writes_files_and_checks_its_arguments(tmp_path):
    out = tmp_path / "tx.parquet"
    assert runner.invoke(app, ["generate", str(out), "--rows", "50"]).exit_code == 0
    assert out.stat().st_size > 0
    assert runner.invoke(app, ["generate", str(tmp_path / "tx.xlsx")]).exit_code == 2
    assert runner.invoke(app, ["generate"]).exit_code == 2


def test_fault_injection_needs_the_versions_it_applies_to(tmp_path):
    bare = runner.invoke(app, ["deploy", "--inject-delay-ms", "100", "--spec", str(tmp_path / "mlray.yaml")])
    assert bare.exit_code == 2 and "VERSIONS" in bare.stderr
    wrong = runner.invoke(app, ["deploy", "3", "--inject-error-rate", "2", "--spec", str(tmp_path / "mlray.yaml")])
    assert wrong.exit_code == 2 and "error_rate" in wrong.stderr
