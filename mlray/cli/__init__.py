"""The `mlray` command line: one module per stage.

Each command imports its stage (training, serving, the monitor, the registry...) inside the command function, not at
the top of its module: that keeps Ray, MLflow and torch out of `import mlray.cli`, so `mlray --help`, a command's
`--help` and a mistyped command answer in about a second, and a command loads only what it runs. These imports carry
no comment of their own; this is their reason.
"""

from __future__ import annotations

import typer

from mlray.cli import audit, canary, features, models, serve, tables
from mlray.cli.common import quiet_library_logs
from mlray.cli.demo import demo
from mlray.cli.evaluate import evaluate
from mlray.cli.generate import generate
from mlray.cli.ingest import ingest
from mlray.cli.init import init
from mlray.cli.monitor import drift_app, incidents_app, monitor_app
from mlray.cli.predict import predict
from mlray.cli.train import train
from mlray.cli.tune import tune
from mlray.cli.validate import validate
from mlray.runtime import leave

app = typer.Typer(
    name="mlray",
    help="From a Delta Lake table to a drift-watched model service on Ray, driven by one spec.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(init)
app.command()(ingest)
app.command()(validate)
app.command()(generate)
app.command()(demo)
app.command()(train)
app.command()(predict)
app.command()(tune)
app.command()(evaluate)
app.command()(serve.deploy)
app.command(name="rollback")(canary.rollback_champion)
app.add_typer(features.app, name="features")
app.add_typer(tables.app, name="tables")
app.add_typer(models.app, name="models")
app.add_typer(serve.app, name="serve")
app.add_typer(canary.app, name="canary")
app.add_typer(audit.app, name="audit")
app.add_typer(serve.keys_app, name="keys")
app.add_typer(monitor_app, name="monitor")
app.add_typer(drift_app, name="drift")
app.add_typer(incidents_app, name="incidents")


def main() -> None:
    quiet_library_logs()
    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    leave(code)
