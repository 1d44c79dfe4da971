"""`mlray demo`: the data-plane walkthrough on an embedded local Ray, no server to set up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlray import dataplane
from mlray.cli.common import command, console, table
from mlray.cli.features import render as render_features
from mlray.lake.synthetic import corrupt, generate_transactions, write_source_file
from mlray.runtime import connect
from mlray.spec import load_spec, starter_spec


def _landing_files(landing: Path, rows: int) -> list[Path]:
    """Three days of exports in three formats; the CSV and JSON ones carry malformed rows.

    Written once: a second demo run finds the same files and ingests nothing twice."""
    existing = sorted(landing.glob("day*.*"))
    if existing:
        return existing
    data = generate_transactions(rows, seed=7, days=3)
    third = rows // 3
    files = [(landing / "day1.csv", corrupt(data.slice(0, third), 0.02, seed=1)),
             (landing / "day2.parquet", data.slice(third, third)),
             (landing / "day3.jsonl", corrupt(data.slice(2 * third), 0.01, seed=2))]
    for path, part in files:
        write_source_file(part, path)
    return [path for path, _ in files]


def _step(number: int, text: str) -> None:
    console.rule(f"[bold]{number}. {text}", align="left")


@command
def demo(
    workdir: Annotated[Path, typer.Option("--dir", help="Folder for the spec, landing files and state.")] = Path("mlray-demo"),
    rows: Annotated[int, typer.Option(min=300, help="Transactions to generate.")] = 30_000,
) -> None:
    """Walk through the data plane: spec → ingest (twice) → validate → features → time travel."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_file = workdir / "mlray.yaml"
    if not spec_file.exists():
        spec_file.write_text(starter_spec())
    spec = load_spec(spec_file)
    _step(1, f"spec {spec_file} → state in {spec.platform.state_dir}")
    with console.status("starting an embedded Ray…"):
        connect(spec.platform)

    _step(2, "landing files from the synthetic card-transaction source")
    files = _landing_files(workdir / "landing", rows)
    console.print("\n".join(f"  {p} ({p.stat().st_size // 1024} KiB)" for p in files))

    _step(3, "ingest: good rows land, malformed rows go to quarantine with a reason")
    report = dataplane.ingest_source(spec, workdir / "landing")
    console.print(table("", ["file", "status", "read", "landed", "quarantined"],
                        [[Path(f.path).name, f.status, f.rows_read, f.rows_landed, f.rows_quarantined]
                         for f in report.files]))
    lake = dataplane.lake_of(spec)
    sample = lake.read(report.quarantine_table).slice(0, 3).column("_reason").to_pylist()
    console.print("quarantine reasons, for example:\n" + "\n".join(f"  • {r}" for r in sample))

    _step(4, "ingest the same folder again: exactly once, nothing lands twice")
    again = dataplane.ingest_source(spec, workdir / "landing")
    console.print(f"files skipped: {sum(f.status == 'skipped' for f in again.files)} of {len(again.files)}; "
                  f"rows landed: {again.rows_landed}; table rows: {lake.open(report.table).count()}")

    _step(5, "validate the latest snapshot")
    result, path = dataplane.validate_table(spec)
    console.print(("[green]" if result.passed else "[red]") + result.summary() + f"[/] (report: {path})")

    _step(6, "fit features with Ray Data on the pinned snapshot")
    render_features(dataplane.fit_features(spec))

    _step(7, "time travel and change data feed")
    name = report.table
    console.print(f"version 1 holds {lake.open(name, 1).count()} rows; the latest "
                  f"(v{lake.latest_version(name)}) holds {lake.open(name).count()}; "
                  f"{lake.changes_since(name, 1).num_rows} rows arrived after version 1")
    console.print(f"\nnext: `mlray tables history {name} --spec {spec_file}`, `mlray features show --spec {spec_file}`")
