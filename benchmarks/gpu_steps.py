"""The model's hot path on an accelerator: the one feature transform, Lightning training steps and batched scoring of
the tabular network, on CUDA (fp32, fp16-mixed, bf16-mixed) against the CPU, in the same run.

It needs no Ray, deltalake or MLflow (a GPU box may lack them), only the spec, the features and the model code:

    python -m benchmarks.gpu_steps --make-data benchmarks/.cache/gpu_rows.parquet   # here: synthetic rows
    python -m benchmarks.gpu_steps --data benchmarks/.cache/gpu_rows.parquet          # wherever: the timings

Prints samples/s for each and the ratio to the CPU, and writes benchmarks/results/gpu_steps-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RESULTS = Path(__file__).parent / "results"


def make_data(path: Path, rows: int) -> None:
    from mlray.lake.synthetic import generate_transactions

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(generate_transactions(rows, seed=7), path)
    print(f"wrote {rows} rows to {path}")


def _median_rate(work, count: int, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return count / statistics.median(times)


def transform_rate(table: pa.Table, fitted) -> float:
    from mlray.features.transform import transform

    return _median_rate(lambda: transform(table, fitted), table.num_rows)


def _batches(inputs: dict, labels: np.ndarray, batch_size: int, steps: int) -> list[dict]:
    import torch

    rows = len(labels)
    out = []
    for step in range(steps):
        start = (step * batch_size) % max(rows - batch_size, 1)
        window = slice(start, start + batch_size)
        out.append({"numeric": torch.from_numpy(inputs["numeric"][window]),
                    "categorical": torch.from_numpy(inputs["categorical"][window]),
                    "label": torch.from_numpy(labels[window])})
    return out


def train_rate(spec, fitted, inputs: dict, labels: np.ndarray, accelerator: str, precision: str, batch_size: int,
               steps: int = 120, warmup: int = 20) -> float:
    """Steady-state training samples/s of the spec's TabularModule under Lightning (after `warmup` steps)."""
    import pytorch_lightning as pl

    from mlray.train.model import TabularModule

    stamps: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if accelerator == "gpu":
                import torch

                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    module = TabularModule(len(fitted.numeric_names), fitted.cardinalities, "binary", 2, spec.model, spec.train)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, callbacks=[Clock()])
    from torch.utils.data import DataLoader

    loader = DataLoader(_batches(inputs, labels, batch_size, steps), batch_size=None, pin_memory=accelerator == "gpu")
    trainer.fit(module, train_dataloaders=loader)
    timed = stamps[warmup:]
    return (len(timed) - 1) * batch_size / (timed[-1] - timed[0])


def score_rate(spec, fitted, inputs: dict, device: str, dtype, batch_size: int) -> float:
    """Batched scoring rows/s of the network (inference mode, autocast to `dtype` on CUDA)."""
    import torch

    from mlray.registry.network import TabularNet, predictions

    net = TabularNet(len(fitted.numeric_names), fitted.cardinalities, 1, spec.model).to(device).eval()
    numeric = torch.from_numpy(inputs["numeric"]).to(device)
    categorical = torch.from_numpy(inputs["categorical"]).to(device)
    rows = len(numeric)

    def run():
        with torch.inference_mode(), torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            for start in range(0, rows, batch_size):
                predictions("binary", net(numeric[start:start + batch_size], categorical[start:start + batch_size]))
        if device == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up
    return _median_rate(run, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--make-data", type=Path, help="write synthetic rows (Parquet) here and stop")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--data", type=Path, default=Path("benchmarks/.cache/gpu_rows.parquet"))
    parser.add_argument("--batch-sizes", default="512,4096")
    args = parser.parse_args()
    if args.make_data:
        make_data(args.make_data, args.rows)
        return

    import torch

    from mlray.features.fit import fit
    from mlray.spec import parse_spec, starter_spec

    spec = parse_spec(starter_spec())
    table = pq.read_table(args.data)
    fitted = fit(table, spec.features)
    from mlray.features.transform import transform

    inputs = transform(table, fitted)
    labels = table.column(spec.data.label_column).to_numpy(zero_copy_only=False).astype(np.float32)
    cuda = torch.cuda.is_available()
    device_name = torch.cuda.get_device_name(0) if cuda else "cpu"
    result = {"device": device_name, "torch": torch.__version__, "rows": table.num_rows,
              "cpu_threads": torch.get_num_threads(), "transform_rows_per_s": transform_rate(table, fitted),
              "train": {}, "score": {}}
    print(f"{device_name}: transform {result['transform_rows_per_s']:,.0f} rows/s ({table.num_rows} rows)")
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        runs = [("cpu", "32-true")] + ([("gpu", "32-true"), ("gpu", "16-mixed"), ("gpu", "bf16-mixed")] if cuda else [])
        train = {f"{accelerator}/{precision}": train_rate(spec, fitted, inputs, labels, accelerator, precision,
                                                          batch_size) for accelerator, precision in runs}
        scoring = {"cpu/32": score_rate(spec, fitted, inputs, "cpu", None, batch_size)}
        if cuda:
            scoring |= {"cuda/32": score_rate(spec, fitted, inputs, "cuda", None, batch_size),
                        "cuda/bf16": score_rate(spec, fitted, inputs, "cuda", torch.bfloat16, batch_size)}
        result["train"][batch_size], result["score"][batch_size] = train, scoring
        for kind, rates in (("train samples/s", train), ("score rows/s", scoring)):
            base = next(iter(rates.values()))
            print(f"  batch {batch_size} {kind}: " +
                  ", ".join(f"{name} {rate:,.0f} ({rate / base:.2f}x)" for name, rate in rates.items()))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"gpu_steps-{'cuda' if cuda else 'cpu'}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
