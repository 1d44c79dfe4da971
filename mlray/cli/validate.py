"""`mlray validate`: a table's expectations on a pinned snapshot."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated, Optional

import typer

from mlray import dataplane
from mlray.cli.common import JsonOption, SpecOption, command, console, print_json, spec_and_ray, table


@command
def validate(
    table_name: Annotated[Optional[str], typer.Option("--table", "-t", help="Table (default: data.train_table).")] = None,
    version: Annotated[Optional[int], typer.Option(help="Table version to check (default: the latest).")] = None,
    spec_path: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check the spec's expectations on one version of a table; exit code 1 when any fails."""
    spec = spec_and_ray(spec_path)
    with console.status("validating…") if not as_json else nullcontext():
        report, path = dataplane.validate_table(spec, table_name, version)
    if as_json:
        print_json({**report.to_dict(), "report": str(path)})
    else:
        rows = [["[green]pass[/]" if c.passed else "[red]FAIL[/]", c.name, c.expected, c.failing or "",
                 ", ".join(c.examples)] for c in report.checks]
        console.print(table(f"validate {report.table} v{report.version} ({report.rows} rows)",
                            ["", "check", "expected", "failing", "examples"], rows))
        console.print(("[green]" if report.passed else "[red]") + report.summary() + f"[/]; report: {path}")
    if not report.passed:
        raise typer.Exit(1)

