"""Train benchmark: steady-state samples/s and start-up of mlray's Ray Train path against plain Lightning.

Both sides train the same `TabularModule` on the same rows, inputs made by the same `transform`,
with the same batch size and epochs, on the same machine, in the same run:
- mlray: `fit_on_ray` (TorchTrainer with its defaults: shards that fit in memory handed to the
  workers once, a checkpoint every epoch), with 1 and then 2 workers sharing the machine's cores;
- mlray local mode: the same loop in this process (`train.execution: local`, what `auto` picks below
  100,000 training rows without a GPU);
- plain: one process, the training split materialised as tensors, a plain DataLoader, `pl.Trainer`.
The inputs are prepared and materialised once before the runs (a warm Ray, as for a sweep's trials).
Steady state is measured between the ends of the first and the last epoch (train + validation).
Start-up is the time from the `fit_on_ray` call to the first batch, split by the workers' marks:
controller and scheduling (until the worker process exists), worker boot and imports (torch,
Lightning), data (its shard read into memory), Lightning set-up. Goals: 1 worker ≥ 0.9× plain,
2 workers ≥ 1.0× 1 worker, 1-worker start-up ≤ 15 s. Prints them, writes JSON under benchmarks/results/.

    python -m benchmarks.train --rows 200000 --epochs 4 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from pathlib import Path

import pytorch_lightning as pl
import torch

from benchmarks.common import CACHE, machine, print_table, write_result
from benchmarks.featurize import ensure_table
from mlray.lake import Lake
from mlray.lake.schema import arrow_schema
from mlray.spec import load_spec
from mlray.train.config import STARTUP_PREFIX
from mlray.train.data import SPLITS, check_splits, model_inputs
from mlray.train.execution import training_inputs
from mlray.train.model import TabularModule
from mlray.train.run import fit_on_ray, prepare
from mlray.train.sweep import with_overrides

STARTER = Path(__file__).parents[1] / "mlray" / "templates" / "starter.yaml"
GOALS = {"one_worker_vs_plain": 0.9, "two_workers_vs_one": 1.0, "startup_s": 15.0}
# Start-up phases: (name, the mark it starts at, the mark it ends at); "call" is the fit_on_ray call.
PHASES = (("controller", "call", "process"), ("worker_imports", "process", "loop"), ("data", "loop", "data"),
          ("lightning", "data", "first_batch"))


def project(rows: int, epochs: int, batch: int, kind: str = "train", extra: str = ""):
    """The starter spec (plus `extra` YAML) over a cached table of `rows` synthetic transactions, state under the
    cache folder `kind`-`rows`."""
    folder = CACHE / f"{kind}-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    text = STARTER.read_text().replace("max_staleness: 30d", "max_staleness: 3650d")  # the cached table ages
    (folder / "mlray.yaml").write_text(text + f"""
train:
  epochs: {epochs}
  batch_size: {batch}
  cpus_per_worker: 1
  early_stopping: null
  checkpoints_to_keep: {epochs}
""" + extra)
    spec = load_spec(folder / "mlray.yaml")
    ensure_table(Lake(spec.platform.lake_uri), rows, arrow_schema(spec.train_table), name=spec.data.train_table)
    return spec


class EpochClock(pl.Callback):
    def __init__(self):
        self.ends: list[float] = []

    def on_train_epoch_end(self, trainer, module) -> None:
        self.ends.append(time.time())


def _loader(inputs: dict, batch: int, shuffle: bool):
    tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
    return torch.utils.data.DataLoader(range(len(tensors["label"])), batch_size=batch, shuffle=shuffle,
                                       collate_fn=lambda index: {k: t[index] for k, t in tensors.items()})


def plain_side(spec, prepared) -> dict:
    """One process: read the snapshot, the same transform, tensors in memory, plain Lightning."""
    started = time.perf_counter()
    lake = Lake(spec.platform.lake_uri)
    data = lake.read(spec.data.train_table, prepared.table_version)
    split = {name: model_inputs(data, prepared.fitted, prepared.labels, spec.train_table.id_column, spec.train.split, i)
             for i, name in enumerate(SPLITS) if name != "test"}
    module = TabularModule(len(prepared.fitted.numeric_names), prepared.fitted.cardinalities, prepared.labels.task,
                           len(prepared.labels.classes), spec.model, spec.train)
    clock = EpochClock()
    trainer = pl.Trainer(max_epochs=spec.train.epochs, accelerator="cpu", devices=1, logger=False, callbacks=[clock],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(module, _loader(split["train"], spec.train.batch_size, True),
                _loader(split["validation"], spec.train.batch_size, False))
    total = time.perf_counter() - started
    return _throughput(clock.ends, len(split["train"]["label"]), total) | {"torch_threads": torch.get_num_threads()}


def ray_side(spec, prepared, workers: int, train_rows: int) -> dict:
    """`fit_on_ray` with `workers` workers, each holding its share of the machine's cores."""
    spec = with_overrides(spec, {"train.num_workers": workers, "train.execution": "ray",
                                 "train.cpus_per_worker": max(1, (os.cpu_count() or 1) // workers)})
    called = time.time()
    result = fit_on_ray(spec, prepared, f"bench-{workers}w-{uuid.uuid4().hex[:8]}", None)
    total = time.time() - called
    reports = sorted((metrics for _, metrics in result.best_checkpoints), key=lambda m: m["epoch_end_s"])
    marks = {"call": called} | {k.removeprefix(STARTUP_PREFIX): v for k, v in reports[0].items()
                                if k.startswith(STARTUP_PREFIX)}
    phases = {name: marks[end] - marks[start] for name, start, end in PHASES}
    return _throughput([m["epoch_end_s"] for m in reports], train_rows, total) | {
        "startup_s": marks["first_batch"] - called, "phases_s": phases,
        "after_last_epoch_s": called + total - reports[-1]["epoch_end_s"]}


def local_side(spec, prepared, train_rows: int) -> dict:
    """`fit_on_ray` in Ray Train's local mode: the loop in this process (what `auto` picks for small tables)."""
    spec = with_overrides(spec, {"train.execution": "local"})
    called = time.time()
    result = fit_on_ray(spec, prepared, f"bench-local-{uuid.uuid4().hex[:8]}", None)
    total = time.time() - called
    reports = sorted((metrics for _, metrics in result.best_checkpoints), key=lambda m: m["epoch_end_s"])
    return _throughput([m["epoch_end_s"] for m in reports], train_rows, total) | {
        "startup_s": reports[0][STARTUP_PREFIX + "first_batch"] - called}


def _throughput(ends: list[float], train_rows: int, total: float) -> dict:
    steady_epoch = (ends[-1] - ends[0]) / (len(ends) - 1)
    return {"samples_per_s": train_rows / steady_epoch, "epoch_s": steady_epoch, "total_s": total,
            "startup_s": total - steady_epoch * len(ends)}


def run(rows: int, epochs: int, batch: int, repeats: int, num_cpus: int) -> dict:
    import ray

    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    spec = project(rows, epochs, batch)
    prepared = prepare(spec)
    training_inputs(spec, prepared)  # materialised once, before any side runs: a warm start, as for sweep trials
    train_rows = check_splits(prepared.raw, spec)["train"]
    runs: dict[str, list[dict]] = {"plain": [], "local": [], "ray_1_worker": [], "ray_2_workers": []}
    for _ in range(repeats):  # interleaved, so every side sees the same machine noise
        runs["plain"].append(plain_side(spec, prepared))
        runs["local"].append(local_side(spec, prepared, train_rows))
        runs["ray_1_worker"].append(ray_side(spec, prepared, 1, train_rows))
        runs["ray_2_workers"].append(ray_side(spec, prepared, 2, train_rows))
    ray.shutdown()
    medians = {side: {k: statistics.median(r[k] for r in rs) for k in ("samples_per_s", "epoch_s", "startup_s", "total_s")}
               for side, rs in runs.items()}
    for side in ("ray_1_worker", "ray_2_workers"):
        medians[side]["phases_s"] = {name: statistics.median(r["phases_s"][name] for r in runs[side])
                                     for name, _, _ in PHASES}
    plain, one = medians["plain"]["samples_per_s"], medians["ray_1_worker"]["samples_per_s"]
    local = medians["local"]
    results = [{"rows": rows, "workers": 0, "execution": "local", "samples_per_s": local["samples_per_s"],
                "plain_samples_per_s": plain, "ratio": local["samples_per_s"] / plain,
                "ratio_vs_1_worker": local["samples_per_s"] / one, "startup_s": local["startup_s"]}]
    for side, workers in (("ray_1_worker", 1), ("ray_2_workers", 2)):
        speed = medians[side]["samples_per_s"]
        results.append({"rows": rows, "workers": workers, "execution": "ray", "samples_per_s": speed,
                        "plain_samples_per_s": plain,
                        "ratio": speed / plain, "ratio_vs_1_worker": speed / one,
                        "startup_s": medians[side]["startup_s"], "startup_phases_s": medians[side]["phases_s"]})
    verdicts = {"one_worker_vs_plain": one / plain, "two_workers_vs_one": medians["ray_2_workers"]["samples_per_s"] / one,
                "startup_s": medians["ray_1_worker"]["startup_s"]}
    goals = {name: {"value": value, "goal": GOALS[name],
                    "met": value <= GOALS[name] if name == "startup_s" else value >= GOALS[name]}
             for name, value in verdicts.items()}
    return {"benchmark": "train", "rows": rows, "train_rows": train_rows, "epochs": epochs, "batch_size": batch,
            "repeats": repeats, "ray_num_cpus": num_cpus, "machine": machine(),
            "goal": "1 worker ≥ 0.9× plain; 2 workers ≥ 1.0× 1 worker; start-up ≤ 15 s", "goals": goals,
            "medians": medians, "results": results, "runs": runs}


def show(result: dict) -> None:
    plain = result["medians"]["plain"]
    rows = [["plain Lightning, 1 process", f"{plain['samples_per_s']:,.0f}", "1.00×", "", f"{plain['startup_s']:.1f}"]]
    rows += [[f"mlray Ray Train, {r['workers']} worker(s)" if r["workers"] else "mlray Ray Train local mode",
              f"{r['samples_per_s']:,.0f}", f"{r['ratio']:.2f}×", f"{r['ratio_vs_1_worker']:.2f}×", f"{r['startup_s']:.1f}"]
             for r in result["results"]]
    print_table(f"train: {result['train_rows']:,} training rows, {result['epochs']} epochs (steady-state samples/s)",
                ["side", "samples/s", "vs plain", "vs 1 worker", "start-up s"], rows)
    print_table("start-up: seconds from the fit_on_ray call to the first batch", ["workers", *(p[0] for p in PHASES)],
                [[str(r["workers"]), *(f"{r['startup_phases_s'][name]:.1f}" for name, _, _ in PHASES)]
                 for r in result["results"] if r["execution"] == "ray"])
    for name, goal in result["goals"].items():
        print(f"{name}: {goal['value']:.2f} (goal {goal['goal']}) {'met' if goal['met'] else 'MISSED'}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=4, help="Ray logical CPUs")
    parser.add_argument("--out", default="train", help="name of the JSON result under benchmarks/results/")
    args = parser.parse_args(argv)
    sizes = []
    for rows in args.rows:
        sizes.append(run(rows, args.epochs, args.batch_size, args.repeats, args.num_cpus))
        show(sizes[-1])
    result = {"benchmark": "train", "goal": sizes[0]["goal"], "machine": machine(),
              "results": [r for size in sizes for r in size["results"]], "sizes": sizes}
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
