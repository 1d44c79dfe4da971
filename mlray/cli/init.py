"""`mlray init`: write a starter spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlray.cli.common import command, console
from mlray.errors import UserError
from mlray.spec import DEFAULT_SPEC_FILE, parse_spec, starter_spec


@command
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the spec.")] = Path(DEFAULT_SPEC_FILE),
    name: Annotated[str, typer.Option(help="Project name.")] = "card-fraud",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a starter spec (a card-fraud example, every key explained) to edit for your own table."""
    if path.exists() and not force:
        raise UserError(f"{path} already exists (pass --force to overwrite it)")
    text = starter_spec(name)
    parse_spec(text, str(path))  # a name that breaks the spec fails here, not at the next command
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    console.print(f"wrote [bold]{path}[/]: edit data.tables and features for your data, then `mlray ingest`")
