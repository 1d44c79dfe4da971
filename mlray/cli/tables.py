"""`mlray tables list|history|show`: the project's Delta tables."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mlray import dataplane
from mlray.cli.common import JsonOption, SpecOption, command, console, print_json, table
from mlray.spec import load_spec

app = typer.Typer(help="List Delta tables, their history and contents.", no_args_is_help=True)


@app.command("list")
@command
def list_cmd(spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Every Delta table under the lake root, with its latest version and row count."""
    lake = dataplane.lake_of(load_spec(spec_path))
    infos = lake.list()
    if as_json:
        print_json([info.__dict__ for info in infos])
        return
    rows = [[i.name, i.version, i.rows, i.columns, i.last_commit.isoformat(timespec="seconds") if i.last_commit else "",
             i.uri] for i in infos]
    console.print(table(f"tables in {lake.root}", ["table", "version", "rows", "columns", "last commit", "uri"], rows))


@app.command("history")
@command
def history_cmd(
    name: Annotated[str, typer.Argument(help="Table name.")],
    limit: Annotated[Optional[int], typer.Option(help="Newest N commits only.")] = None,
    spec_path: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """A table's commits, newest first: operation, rows added, batch id and source file."""
    entries = dataplane.lake_of(load_spec(spec_path)).history(name, limit)
    if as_json:
        print_json(entries)
        return
    rows = [[e["version"], e["timestamp"][:19], e["operation"], e["rows_added"], e["batch_id"], e["source"]]
            for e in entries]
    console.print(table(f"history of {name}", ["version", "timestamp", "operation", "rows added", "batch id",
                                               "source"], rows))


@app.command("show")
@command
def show_cmd(
    name: Annotated[str, typer.Argument(help="Table name.")],
    version: Annotated[Optional[int], typer.Option(help="Pinned version (time travel).")] = None,
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="ISO timestamp (time travel).")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 10,
    spec_path: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """The first rows of a table at its latest version, a pinned version, or as of a time."""
    lake = dataplane.lake_of(load_spec(spec_path))
    dt = lake.open(name, version, as_of)
    data = dt.to_pyarrow_dataset().head(limit)
    if as_json:
        print_json({"table": name, "version": dt.version(), "rows": data.to_pylist()})
        return
    console.print(table(f"{name} v{dt.version()} (first {data.num_rows} of {dt.count()} rows)", data.column_names,
                        [list(r.values()) for r in data.to_pylist()]))
