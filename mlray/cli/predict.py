"""`mlray predict`: score a Delta table with a registered model (on the driver or an actor pool); one idempotent commit."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated, Optional

import typer

from mlray.cli.common import JsonOption, SpecOption, command, console, print_json, spec_and_ray, table


@command
def predict(
    model: Annotated[str, typer.Option("--model", "-m", help="NAME@ALIAS, NAME/VERSION, an alias or a version number.")],
    table_name: Annotated[str, typer.Option("--table", "-t", help="Delta table to score.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Delta table the predictions go to (created if missing).")],
    version: Annotated[Optional[int], typer.Option(help="Version of the input table (default: the latest).")] = None,
    execution: Annotated[str, typer.Option(
        help="local: score on this process; ray: on an actor pool; auto: local up to 2M rows.")] = "auto",
    spec_path: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score a table with one model version; the same version on the same snapshot is written once."""
    from mlray.batch.predict import check_execution, predict_table

    check_execution(execution)
    spec = spec_and_ray(spec_path)
    with console.status(f"scoring table {table_name} with {model}…") if not as_json else nullcontext():
        outcome = predict_table(spec, model, table_name, out, version, execution=execution)
    if as_json:
        print_json(outcome.__dict__)
        return
    written = f"{outcome.rows:,} rows" if outcome.committed else "nothing (already there)"
    console.print(table(f"predictions of {outcome.model_name} version {outcome.model_version}", ["field", "value"], [
        ["input", f"{outcome.table} v{outcome.table_version}"],
        ["feature version", outcome.feature_version],
        ["scored", "on this process" if outcome.execution == "local" else "on an actor pool"],
        ["written", written],
        ["output", f"{outcome.out_table} v{outcome.out_version}"],
    ]))
