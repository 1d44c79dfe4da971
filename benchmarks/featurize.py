"""Featurize benchmark: Delta → validate → fit → transform, mlray on Ray Data against one process.

Both sides run the same functions on the same Delta snapshot in the same run: mlray's way
(`validate_and_fit`: validation and the feature fit in one Ray Data pass, then `transform_dataset`)
and a single-process pyarrow/NumPy reference (the table read whole with deltalake, then the
same row checks, fit and `transform` called directly). Prints rows/s and their ratio, writes
JSON under benchmarks/results/.

    python benchmarks/featurize.py --rows 1000000 10000000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.common import CACHE, machine, report, start_ray
from mlray.dataplane import validate_and_fit
from mlray.features import fit, transform, transform_dataset
from mlray.lake import Lake
from mlray.lake.rules import check_rows
from mlray.lake.schema import arrow_schema
from mlray.lake.synthetic import generate_transactions
from mlray.spec import load_spec

SPEC = Path(__file__).parents[1] / "mlray" / "templates" / "starter.yaml"
CHUNK = 1_000_000


def ensure_table(lake: Lake, rows: int, schema: pa.Schema, name: str | None = None) -> str:
    """A Delta table of `rows` synthetic transactions, written once in 1M-row batches and cached."""
    name = name or f"transactions_{rows}"
    for start in range(0, rows, CHUNK):
        size = min(CHUNK, rows - start)
        batch_id = f"bench:{start}:{size}"
        if not lake.committed(name, batch_id):
            data = generate_transactions(size, seed=start // CHUNK, id_prefix=f"b{start // CHUNK}", days=3)
            lake.append(name, data, batch_id=batch_id, schema=schema)
    return name


def mlray_side(lake: Lake, name: str, spec) -> dict:
    table = spec.train_table
    sources = list(dict.fromkeys(f.source for f in spec.features))
    started = time.perf_counter()
    version = lake.open(name).version()
    snapshot = lake.dataset(name, version)  # opened once, read twice
    report, fitted = validate_and_fit(lake, name, table, spec.features, version, dataset=snapshot)  # one pass
    fitted_at = time.perf_counter()
    out = transform_dataset(snapshot.select_columns(sources), fitted).materialize()
    rows = out.count()
    done = time.perf_counter()
    assert report.passed and rows == report.rows
    return {"seconds": done - started, "validate_and_fit_s": fitted_at - started, "transform_s": done - fitted_at,
            "feature_version": fitted.version}


def reference_side(lake: Lake, name: str, spec) -> dict:
    """The same work in one process: read whole, check rows, unique ids (Arrow's hash-based
    count_distinct, the fastest in-process way), fit, transform."""
    table_spec = spec.train_table
    started = time.perf_counter()
    data = lake.open(name).to_pyarrow_table()
    read = time.perf_counter()
    _, violations = check_rows(data, table_spec)
    duplicates = data.num_rows - pc.count_distinct(data.column(table_spec.id_column)).as_py()
    newest = pc.max(data.column(table_spec.event_time_column)).as_py()
    validated = time.perf_counter()
    fitted = fit(data, spec.features)
    fitted_at = time.perf_counter()
    out = transform(data, fitted)
    done = time.perf_counter()
    assert not violations and duplicates == 0 and newest is not None and len(out["numeric"]) == data.num_rows
    return {"seconds": done - started, "read_s": read - started, "validate_s": validated - read,
            "fit_s": fitted_at - validated, "validate_and_fit_s": fitted_at - started, "transform_s": done - fitted_at,
            "feature_version": fitted.version}


def run(rows_list: list[int], repeats: int, num_cpus: int | None) -> dict:
    import ray

    spec = load_spec(SPEC)
    lake = Lake(str(CACHE / "featurize-lake"))
    start_ray(num_cpus)
    results = []
    for rows in rows_list:
        name = ensure_table(lake, rows, arrow_schema(spec.train_table))
        mlray_side(lake, name, spec)  # warm-up: worker processes, imports
        runs = {"mlray": [], "reference": []}
        for _ in range(repeats):  # interleaved, so both sides see the same machine noise
            runs["mlray"].append(mlray_side(lake, name, spec))
            runs["reference"].append(reference_side(lake, name, spec))
        same_version = runs["mlray"][0]["feature_version"] == runs["reference"][0]["feature_version"]
        medians = {side: {key: statistics.median(r[key] for r in rs) for key in rs[0] if key.endswith("s")
                          and key != "feature_version"} for side, rs in runs.items()}
        entry = {
            "rows": rows,
            "mlray_rows_per_s": rows / medians["mlray"]["seconds"],
            "reference_rows_per_s": rows / medians["reference"]["seconds"],
            "ratio": medians["reference"]["seconds"] / medians["mlray"]["seconds"],
            "same_feature_version": same_version,
            "median_seconds": medians,
            "runs": runs,
        }
        results.append(entry)
        print(f"{rows:>11,} rows: mlray {medians['mlray']['seconds']:.2f}s, reference "
              f"{medians['reference']['seconds']:.2f}s, ratio {entry['ratio']:.2f}× (same feature version: "
              f"{same_version})", flush=True)
    ray.shutdown()
    return {"benchmark": "featurize", "repeats": repeats, "ray_num_cpus": num_cpus, "machine": machine(),
            "goal": "≥ 0.5× at 1M rows, ≥ 1× at 10M", "results": results}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=None, help="Ray logical CPUs (default: the machine's)")
    args = parser.parse_args(argv)
    result = run(args.rows, args.repeats, args.num_cpus)
    report("featurize", result)
    return result


if __name__ == "__main__":
    main()
