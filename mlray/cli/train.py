"""`mlray train`: train on a pinned, validated snapshot with Ray Train; track, register and gate."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mlray.cli.common import JsonOption, SpecOption, command, console, count_progress, print_json, spec_and_ray, table


@command
def train(
    version: Annotated[Optional[int], typer.Option(help="Version of the train table (default: the latest).")] = None,
    run_name: Annotated[Optional[str], typer.Option(help="Run name; a run re-submitted with the same name resumes.")] = None,
    spec_path: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train the spec's model on Ray Train, evaluate it on the held-out split, register it, apply the gate."""
    from mlray.training import train as train_and_admit

    spec = spec_and_ray(spec_path)
    with count_progress(f"epochs on {spec.train.num_workers} Ray Train workers", enabled=not as_json) as progress:
        outcome = train_and_admit(spec, version=version, run_name=run_name, progress=progress)
    if as_json:
        print_json(outcome.__dict__)
        return
    print_outcome(outcome)


def print_metrics(title: str, metrics: dict[str, float], slices: dict) -> None:
    """Held-out metrics as a table, then the first three of them per slice value."""
    console.print(table(title, ["metric", "value"], [[k, f"{v:.4f}"] for k, v in metrics.items()]))
    shown = list(metrics)[:3]
    for column, values in slices.items():
        rows = [[value, m["rows"], *(f"{m[k]:.4f}" for k in shown)] for value, m in values.items()]
        console.print(table(f"by {column}", [column, "rows", *shown], rows))


def print_outcome(outcome) -> None:
    """A trained model's metrics, slices, lineage and gate decision."""
    print_metrics(f"{outcome.model_name} version {outcome.model_version} ({outcome.task}) — {outcome.decision}",
                  outcome.metrics, outcome.slices)
    console.print(f"run {outcome.run_name} ({outcome.run_id}); table v{outcome.table_version}, "
                  f"feature version {outcome.feature_version}; epochs trained: {outcome.epochs}; "
                  f"{'in this process' if outcome.execution == 'local' else 'on Ray Train workers'}")
    for reason in outcome.reasons:
        console.print(f"gate: {reason}")
