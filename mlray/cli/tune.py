"""`mlray tune`: a Ray Tune sweep of Ray Train runs; the best trial is registered through the gate."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Optional

import typer

from mlray.cli.common import JsonOption, SpecOption, command, console, count_progress, print_json, spec_and_ray, table
from mlray.cli.train import print_outcome


@command
def tune(
    version: Annotated[Optional[int], typer.Option(help="Version of the train table (default: the latest).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Sweep name (default: <project>-sweep-<UTC time>).")] = None,
    spec_path: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sweep the spec's tune.space with Ray Tune (ASHA), each trial a Ray Train run; register the best trial."""
    from mlray.spec import load_spec
    from mlray.train.sweep import search_space
    from mlray.training import tune as tune_and_admit

    search_space(load_spec(spec_path))  # a wrong or empty search space fails before Ray starts
    spec = spec_and_ray(spec_path)
    with count_progress("trials", enabled=not as_json) as progress:
        outcome = tune_and_admit(spec, version=version, sweep=name, progress=progress)
    if as_json:
        print_json(asdict(outcome))
        return
    rows = [[t.trial_id, t.status, t.epochs, "" if t.best_val_loss is None else f"{t.best_val_loss:.4f}",
             ", ".join(f"{k}={_short(v)}" for k, v in t.params.items()) + (f" ({t.error})" if t.error else "")]
            for t in sorted(outcome.trials, key=lambda t: (t.best_val_loss is None, t.best_val_loss))]
    console.print(table(f"sweep {outcome.sweep}: {len(outcome.trials)} trials, {outcome.concurrency} at a time",
                        ["trial", "status", "epochs", "best val_loss", "settings"], rows))
    console.print(f"best trial {outcome.best_trial}; parent MLflow run {outcome.parent_run_id}")
    print_outcome(outcome.model)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
