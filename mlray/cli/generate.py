"""`mlray generate`: synthetic card transactions, to a file or straight into a Delta table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mlray import dataplane
from mlray.cli.common import SpecOption, command, console
from mlray.errors import UserError
from mlray.lake.schema import arrow_schema
from mlray.lake.synthetic import Shift, corrupt, generate_transactions, write_source_file
from mlray.spec import load_spec

Fraction = Annotated[float, typer.Option(min=0.0, max=1.0)]


@command
def generate(
    out: Annotated[Optional[Path], typer.Argument(help="File to write (.csv, .parquet or .jsonl).")] = None,
    rows: Annotated[int, typer.Option(min=1, help="Number of transactions.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same rows).")] = 0,
    days: Annotated[float, typer.Option(min=0.01, help="Days the transactions span, ending now.")] = 30,
    covariate_shift: Fraction = 0.0,
    prior_shift: Fraction = 0.0,
    concept_shift: Fraction = 0.0,
    malformed: Annotated[float, typer.Option(min=0.0, max=1.0, help="Fraction of rows to corrupt (files only).")] = 0.0,
    table_name: Annotated[Optional[str], typer.Option("--table", "-t", help="Append to this Delta table instead.")] = None,
    spec_path: SpecOption = None,
) -> None:
    """Generate realistic card transactions (with optional covariate, prior and concept shift)."""
    if (out is None) == (table_name is None):
        raise UserError("give either an output file or --table, not both and not neither")
    data = generate_transactions(rows, seed=seed, days=days,
                                 shift=Shift(covariate=covariate_shift, prior=prior_shift, concept=concept_shift))
    if out is not None:
        try:
            write_source_file(corrupt(data, malformed, seed) if malformed else data, out)
        except ValueError as exc:
            raise UserError(f"{out}: {exc}") from None
        console.print(f"wrote {rows} transactions to [bold]{out}[/]")
        return
    if malformed:
        raise UserError("--malformed applies to files (tables only take well-formed rows); write a file and ingest it")
    spec = load_spec(spec_path)
    batch_id = f"synthetic:{seed}:{rows}:{days}:{covariate_shift}:{prior_shift}:{concept_shift}"
    result = dataplane.lake_of(spec).append(table_name, data, batch_id=batch_id,
                                            schema=arrow_schema(spec.data.table(table_name)))
    state = "appended" if result.committed else "already present (same seed and settings); nothing appended"
    console.print(f"{rows} transactions {state}: table [bold]{table_name}[/] is at version {result.version}")
