"""What every command shares: the spec and --json options, Ray start-up, output, and error handling."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from mlray.errors import UserError
from mlray.spec import ProjectSpec, load_spec

console = Console()
errors = Console(stderr=True)

SpecOption = Annotated[
    Optional[Path],
    typer.Option("--spec", "-s", help="Project spec (default: $MLRAY_SPEC or ./mlray.yaml).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


def spec_and_ray(spec_path: Path | None) -> ProjectSpec:
    """Load the spec, then start or join Ray as its platform section says."""
    from mlray.runtime import connect

    spec = load_spec(spec_path)
    with console.status("starting Ray…" if not spec.platform.ray_address else "joining the Ray cluster…"):
        connect(spec.platform)
    return spec


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """User errors become one line on stderr and exit code 2; bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(title: str, columns: list[str], rows: list[list[Any]], **kwargs: Any) -> Table:
    out = Table(title=title, title_justify="left", **kwargs)
    for name in columns:
        out.add_column(name, justify="right" if name.startswith(("rows", "#", "version", "failing")) else "left")
    for row in rows:
        out.add_row(*["" if v is None else str(v) for v in row])
    return out


def quiet_library_logs() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
