"""`mlray ingest`: files or a landing folder into a Delta table, each file exactly once."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mlray import dataplane
from mlray.cli.common import JsonOption, SpecOption, command, console, print_json, spec_and_ray, table
from mlray.lake.ingest import discover


@command
def ingest(
    source: Annotated[str, typer.Argument(help="A CSV, Parquet or JSON-lines file, or a landing folder of them.")],
    table_name: Annotated[Optional[str], typer.Option("--table", "-t", help="Target table (default: data.train_table).")] = None,
    spec_path: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ingest files into a Delta table: good rows land, bad rows go to <table>_quarantine with a reason."""
    spec = spec_and_ray(spec_path)
    total = len(discover(source, spec.platform.credentials))
    with Progress(TextColumn("[bold]ingesting"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=console, transient=True, disable=as_json) as progress:
        task = progress.add_task("", total=total)
        report = dataplane.ingest_source(
            spec, source, table_name,
            on_file=lambda result: progress.update(task, advance=1, description=result.path.rsplit("/", 1)[-1]),
        )
    if as_json:
        print_json(report.to_dict())
        return
    rows = [[f.path, f.status, f.rows_read, f.rows_landed, f.rows_quarantined, f.table_version] for f in report.files]
    rows.append(["total", "", report.rows_read, report.rows_landed, report.rows_quarantined, ""])
    console.print(table(f"ingest → {report.table}", ["file", "status", "rows read", "rows landed",
                                                     "rows quarantined", "version"], rows))
    if report.rows_quarantined:
        console.print(f"{report.rows_quarantined} rows quarantined with reasons in table "
                      f"[bold]{report.quarantine_table}[/] (see `mlray tables show {report.quarantine_table}`)")
