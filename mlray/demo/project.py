"""The demo's project folder: a spec tuned to run the whole loop in minutes on a laptop, an API key, the landing files
of a week of exports, and the drifted files that land upstream later."""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from mlray.errors import UserError
from mlray.lake.synthetic import Shift, corrupt, generate_transactions, write_source_file
from mlray.runtime import NAMESPACE
from mlray.serve.auth import hash_key
from mlray.spec import ProjectSpec, load_spec, starter_spec

MARKER = ".mlray-demo"  # a folder holding it was made by the demo, so a new run may start it afresh
KEY_FILE = "api-key"
DRIFT = Shift(covariate=1.0)  # bigger amounts, more online and foreign, newer accounts
CALM_TIMEOUT_S = 300  # for the monitor's first two windows
LOOP_TIMEOUT_S = 600  # from the drift's onset to the incident's outcome


@dataclass(frozen=True)
class Sizes:
    rows: int  # transactions in the landing files
    epochs: int
    trials: int  # of the Tune sweep
    window_rows: int  # served rows per drift check
    drifted_rows: int  # transactions in the drifted files that land upstream
    interval: str  # of each canary step

    @classmethod
    def of(cls, fast: bool, rows: int | None = None) -> "Sizes":
        sizes = cls(12_000, 3, 2, 300, 8_000, "4s") if fast else cls(30_000, 5, 3, 500, 15_000, "10s")
        return sizes if rows is None else replace(sizes, rows=rows)


def fresh_folder(folder: Path) -> None:
    """Make `folder` empty for a new run: a previous demo's folder is cleared, anything else is refused."""
    if folder.exists() and any(folder.iterdir()):
        if not (folder / MARKER).is_file():
            raise UserError(f"{folder} is not empty and was not made by `mlray demo`: pick another --dir")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("made by `mlray demo`; a new run clears this folder\n")


def write_project(folder: Path, sizes: Sizes, port: int, name: str = "card-fraud") -> tuple[ProjectSpec, str]:
    """The spec (the starter's card-fraud model, small and quick) and a new API key (its hash goes in the spec)."""
    key = f"demo-{secrets.token_urlsafe(32)}"  # at least 32 characters, as every API key
    (folder / KEY_FILE).write_text(key + "\n")
    (folder / KEY_FILE).chmod(0o600)
    text = starter_spec(name) + f"""
# --- the demo's settings: a small model, quick canary steps, a monitor with small windows ---
train:
  num_workers: 1
  epochs: {sizes.epochs}
  batch_size: 256
  cpus_per_worker: 0.5
  early_stopping: null
  gate: {{tolerance: 0.05}}
tune:
  trials: {sizes.trials}
  scheduler: null
  space:
    train.learning_rate: {{loguniform: [0.001, 0.01]}}
    model.dropout: {{uniform: [0.0, 0.2]}}
serve:
  port: {port}
  log_flush_s: 0.5
  api_keys: ['{hash_key(key)}']
rollout:
  steps: [50, 100]
  interval: {sizes.interval}
  min_requests: 30
  checks: {{max_divergence: 10, max_p99_latency_ratio: 5, max_metric_drop: 0.5}}
monitor:
  enabled: true
  window_rows: {sizes.window_rows}
  min_window_rows: 100
  window: 1h
  poll_interval: 0.5s
  retrain: {{drifted_windows: 2, of_windows: 3, cooldown: 1h, source: '{(folder / "upstream").resolve()}', window: 3d}}
"""
    (folder / "mlray.yaml").write_text(text)
    return load_spec(folder / "mlray.yaml"), key


def landing_files(landing: Path, rows: int) -> list[Path]:
    """A week of exports in three formats, so the model and its drift reference see every weekday (traffic comes
    from any day of the week); the CSV and JSON ones carry malformed rows."""
    data = generate_transactions(rows, seed=7, days=7)
    third = rows // 3
    files = [(landing / "day1.csv", corrupt(data.slice(0, third), 0.02, seed=1)),
             (landing / "day2.parquet", data.slice(third, third)),
             (landing / "day3.jsonl", corrupt(data.slice(2 * third), 0.01, seed=2))]
    for path, part in files:
        write_source_file(part, path)
    return [path for path, _ in files]


def land_drifted_files(spec: ProjectSpec, rows: int) -> Path:
    """The world moves: two days of drifted transactions land in the folder the retraining job ingests."""
    path = Path(spec.monitor.retrain.source) / "recent.parquet"
    write_source_file(generate_transactions(rows, seed=77, shift=DRIFT, days=2, id_prefix="recent"), path)
    return path


def stop_service(spec: ProjectSpec) -> None:
    """Take the project's service down: the monitor, the Serve applications, then the control plane and the rollout
    controller (in that order: a live ingress would start its control plane again)."""
    # Ray (and MLflow, through some of these): only stopping the service needs them; the CLI imports this module
    import ray
    from ray import serve

    from mlray.monitor import actor
    from mlray.rollout.controller import controller_name
    from mlray.serve.control import actor_name
    from mlray.serve.deploy import running_apps

    actor.stop(spec)
    for app in running_apps():
        if app == spec.name or app.startswith(f"{spec.name}-model-"):
            serve.delete(app)
    for name in (actor_name(spec), controller_name(spec.name)):
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except ValueError:  # not running
            pass
