"""Batch-predict benchmark: `mlray predict` on Ray Data against a single-process pyfunc loop.

Both sides score the same Delta snapshot with the same registered model version in the same run,
and both end with the predictions in a Delta table: mlray's way (`predict_table` with its default
execution: up to 2M rows the driver scores Arrow batches itself; above, Ray Data reads the needed
columns, an actor pool scores them and the workers write Parquet, committed once) and the loop a
user would write (the pyfunc model loaded with MLflow, `.predict` on pandas chunks of the table
read with deltalake, the result appended with one commit). Prints rows/s and their ratio against
the goals (≥ 1× at 1M rows, ≥ 1.5× at 10M), writes JSON under benchmarks/results/.

The model is a small one trained once with `train_model` and cached under benchmarks/.cache.

    python benchmarks/batch_predict.py --rows 1000000 --repeats 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

import mlflow
import pandas as pd
import pyarrow as pa

from benchmarks.common import CACHE, SMALL_TRAIN, ensure_small_model, machine, report, start_ray
from benchmarks.featurize import ensure_table
from mlray import dataplane
from mlray.batch.predict import predict_table
from mlray.lake import Lake
from mlray.lake.schema import arrow_schema
from mlray.registry.package import naive_utc
from mlray.spec import ProjectSpec, load_spec, starter_spec

HOME = CACHE / "batch-predict"
CHUNK = 100_000  # rows per pandas chunk of the reference loop
GOALS = {1_000_000: 1.0, 10_000_000: 1.5}  # rows → the ratio mlray must reach


def project() -> ProjectSpec:
    HOME.mkdir(parents=True, exist_ok=True)
    path = HOME / "mlray.yaml"
    path.write_text(starter_spec() + SMALL_TRAIN)
    return load_spec(path)


def drop(lake: Lake, name: str) -> None:
    shutil.rmtree(lake.uri(name), ignore_errors=True)


def mlray_side(spec: ProjectSpec, version: str, name: str, rows: int, actors: int | None) -> dict:
    lake = dataplane.lake_of(spec)
    drop(lake, "scores_mlray")
    started = time.perf_counter()
    outcome = predict_table(spec, version, name, "scores_mlray", actors=actors)
    done = time.perf_counter()
    assert outcome.committed and outcome.rows == rows
    return {"seconds": done - started, "execution": outcome.execution}


def reference_side(spec: ProjectSpec, version: str, name: str, rows: int) -> dict:
    """The single-process loop: load the pyfunc, predict on pandas chunks, append the result in one commit."""
    lake = dataplane.lake_of(spec)
    id_column = spec.train_table.id_column
    drop(lake, "scores_reference")
    started = time.perf_counter()
    model = mlflow.pyfunc.load_model(f"models:/{spec.name}/{version}")
    loaded = time.perf_counter()
    columns = [id_column, *model.metadata.get_input_schema().input_names()]
    parts = []
    for batch in lake.open(name).to_pyarrow_dataset().to_batches(columns=columns, batch_size=CHUNK):
        frame = naive_utc(batch.to_pandas())
        predicted = model.predict(frame)
        predicted.insert(0, id_column, frame[id_column].to_numpy())
        parts.append(predicted)
    scored = time.perf_counter()
    out = pd.concat(parts, ignore_index=True).assign(model_name=spec.name, model_version=int(version),
                                                      input_table_version=lake.latest_version(name))
    table = pa.Table.from_pandas(out, preserve_index=False)
    result = lake.append("scores_reference", table, batch_id="reference", schema=table.schema)
    done = time.perf_counter()
    assert result.rows == rows
    return {"seconds": done - started, "load_s": loaded - started, "predict_s": scored - loaded,
            "write_s": done - scored}


def same_scores(lake: Lake) -> bool:
    """Both sides wrote the same predictions (mean score to 1e-6; every id once)."""
    ours, theirs = lake.read("scores_mlray"), lake.read("scores_reference")
    mean = [t.column("score").to_numpy().mean() for t in (ours, theirs)]
    return ours.num_rows == theirs.num_rows and abs(mean[0] - mean[1]) < 1e-6


def run(rows_list: list[int], repeats: int, num_cpus: int | None, actors: int | None) -> dict:
    import ray

    start_ray(num_cpus)
    spec = project()
    version = ensure_small_model(spec, HOME)
    lake = dataplane.lake_of(spec)
    results = []
    for rows in rows_list:
        name = ensure_table(lake, rows, arrow_schema(spec.train_table))
        mlray_side(spec, version, name, rows, actors)  # warm-up: worker processes, imports
        runs = {"mlray": [], "reference": []}
        for _ in range(repeats):  # interleaved, so both sides see the same machine noise
            runs["mlray"].append(mlray_side(spec, version, name, rows, actors))
            runs["reference"].append(reference_side(spec, version, name, rows))
        medians = {side: {key: statistics.median(r[key] for r in rs) for key in rs[0] if key != "execution"}
                   for side, rs in runs.items()}
        reference, ours = medians["reference"], medians["mlray"]["seconds"]
        goal = GOALS.get(rows)
        entry = {
            "rows": rows,
            "execution": runs["mlray"][0]["execution"],
            "mlray_rows_per_s": rows / ours,
            "reference_rows_per_s": rows / reference["seconds"],
            "ratio": reference["seconds"] / ours,
            "ratio_without_reference_write": (reference["load_s"] + reference["predict_s"]) / ours,
            "same_scores": same_scores(lake),
            "goal": goal,
            "verdict": None if goal is None else ("met" if reference["seconds"] / ours >= goal else "missed"),
            "median_seconds": medians,
            "runs": runs,
        }
        results.append(entry)
        print(f"{rows:>11,} rows: mlray {ours:.2f}s, reference {reference['seconds']:.2f}s "
              f"(load {reference['load_s']:.2f}s, predict {reference['predict_s']:.2f}s, write {reference['write_s']:.2f}s),"
              f" ratio {entry['ratio']:.2f}× ({entry['execution']}; same scores: {entry['same_scores']};"
              f" goal {goal}×: {entry['verdict']})", flush=True)
    ray.shutdown()
    return {"benchmark": "batch_predict", "repeats": repeats, "ray_num_cpus": num_cpus, "actors": actors,
            "model_version": version, "machine": machine(), "goal": "≥ 1× at 1M rows, ≥ 1.5× at 10M",
            "results": results}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=None, help="Ray logical CPUs (default: the machine's)")
    parser.add_argument("--actors", type=int, default=None, help="most scoring actors (default: one per CPU)")
    args = parser.parse_args(argv)
    result = run(args.rows, args.repeats, args.num_cpus, args.actors)
    report("batch_predict", result)
    return result


if __name__ == "__main__":
    main()
