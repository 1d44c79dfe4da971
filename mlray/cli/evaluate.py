"""`mlray evaluate`: score a registered model on the held-out split of a pinned table version."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict
from typing import Annotated, Optional

import typer

from mlray.cli.common import JsonOption, SpecOption, command, console, print_json, spec_and_ray
from mlray.cli.train import print_metrics


@command
def evaluate(
    model: Annotated[str, typer.Argument(help="NAME@ALIAS, NAME/VERSION, an alias or a version number.")] = "champion",
    version: Annotated[Optional[int], typer.Option(help="Version of the train table (default: the latest).")] = None,
    spec_path: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score a registered model on the test split (overall and per train.slices); log it to MLflow."""
    from mlray.train.evaluate import evaluate_model

    spec = spec_and_ray(spec_path)
    with console.status("scoring the held-out rows…") if not as_json else nullcontext():
        found = evaluate_model(spec, model, version)
    if as_json:
        print_json(asdict(found))
        return
    print_metrics(f"{found.model_name} version {found.model_version} on {found.table} v{found.table_version} "
                  f"({found.rows} held-out rows)", found.metrics, found.slices)
    console.print(f"logged as MLflow run {found.run_id}")

