"""What every command shares: the spec and --json options, Ray start-up, output, and error handling."""

from __future__ import annotations

import functools
import json
import logging
import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlray.errors import UserError
from mlray.spec import ProjectSpec, load_spec

console = Console()
errors = Console(stderr=True)
_json_out = None  # the real stdout while a --json command runs

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
    """User errors become one line on stderr and exit code 2; bugs keep their traceback.

    With --json, stdout carries the JSON document only: whatever else writes to stdout meanwhile
    (Ray prints raylet warnings there) goes to stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _json_out
        try:
            if not kwargs.get("as_json"):
                return fn(*args, **kwargs)
            _json_out = sys.stdout
            with redirect_stdout(sys.stderr):
                return fn(*args, **kwargs)
        except UserError as exc:
            errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        finally:
            _json_out = None

    return wrapper


@contextmanager
def count_progress(what: str, enabled: bool = True) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar fed by a `progress(done, total)` callback (None when disabled, e.g. with --json)."""
    if not enabled:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def print_json(data: Any) -> None:
    (_json_out or sys.stdout).write(json.dumps(data, indent=2, default=str) + "\n")


def table(title: str, columns: list[str], rows: list[list[Any]], **kwargs: Any) -> Table:
    out = Table(title=title, title_justify="left", **kwargs)
    for name in columns:
        out.add_column(name, justify="right" if name.startswith(("rows", "#", "version", "failing")) else "left")
    for row in rows:
        out.add_row(*["" if v is None else str(v) for v in row])
    return out


def quiet_library_logs() -> None:
    """Warnings and errors only: MLflow's start-up notes, hints and download bars are not for a terminal user."""
    import os
    import warnings

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # read when mlflow configures its loggers, at import
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", module=r"mlflow\..*")
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
