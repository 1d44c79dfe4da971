"""What every benchmark shares: the data cache, machine facts, printing and the JSON results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
CACHE = Path(os.environ.get("MLRAY_BENCH_CACHE", HERE / ".cache"))


def machine() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "commit": commit.stdout.strip() or None, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {path}")
    return path


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def start_ray(num_cpus: int | None) -> None:
    """A local Ray for one benchmark run, quiet: no dashboard, no progress bars."""
    from ray.data import DataContext

    from mlray.runtime import start_local_ray

    start_local_ray(CACHE / "ray", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                    logging_level="ERROR")
    DataContext.get_current().enable_progress_bars = False


def report(name: str, result: dict) -> None:
    """Print the rows/s of both sides and their ratio, per size; write the JSON result."""
    print_table(f"{name} (rows/s)", ["rows", "mlray", "reference", "ratio"],
                [[f"{r['rows']:,}", f"{r['mlray_rows_per_s']:,.0f}", f"{r['reference_rows_per_s']:,.0f}",
                  f"{r['ratio']:.2f}×"] for r in result["results"]])
    write_result(name, result)


SMALL_TRAIN_ROWS = 20_000
SMALL_TRAIN = """
train:
  num_workers: 1
  cpus_per_worker: 1
  epochs: 2
  early_stopping: null
"""


def ensure_small_model(spec, home: Path) -> str:
    """The champion version of the project at `home` (spec with SMALL_TRAIN): trained once, then cached."""
    from mlray import dataplane
    from mlray.lake.schema import arrow_schema
    from mlray.lake.synthetic import generate_transactions
    from mlray.registry.models import Registry
    from mlray.training import train as train_and_admit

    version = Registry(spec).version_of("champion")
    if version is not None:
        return version
    dataplane.lake_of(spec).append(spec.data.train_table, generate_transactions(SMALL_TRAIN_ROWS, seed=0),
                                   batch_id="train", schema=arrow_schema(spec.train_table))
    print(f"training a small model on {SMALL_TRAIN_ROWS:,} rows (once; cached in {home})", flush=True)
    return train_and_admit(spec).model_version
