"""Tune benchmark: a 4-trial sweep's wall time against the sum of its trials' training time.

`tune_model` runs a sweep of 4 trials (learning rate sampled, every trial to the last epoch) over
inputs prepared once and shared by every trial; trials run concurrently as far as the cluster's
CPUs allow. A trial's training time runs from its first batch to its last epoch's end (its
start-up is not training); the sweep's wall time runs from the first trial's start to the last
one's end. Goal: wall ≤ 1.5× the sum of the trials' training times. Writes JSON under
benchmarks/results/.

    python -m benchmarks.tune --rows 200000 --epochs 3 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks.common import machine, print_table, start_ray, write_result
from benchmarks.train import project
from mlray.train.sweep import tune_model, with_overrides

GOAL = 1.5
SWEEP = """
tune:
  trials: {trials}
  scheduler: null
  space:
    train.learning_rate: {{loguniform: [0.0003, 0.01]}}
"""


def one_sweep(spec) -> dict:
    outcome = tune_model(spec)
    training = [t.training_s for t in outcome.trials]
    if None in training:
        raise RuntimeError(f"a trial reported no training time: {[(t.trial_id, t.status, t.error) for t in outcome.trials]}")
    return {"sweep_s": outcome.sweep_s, "training_sum_s": sum(training), "trials_training_s": training,
            "concurrency": outcome.concurrency, "ratio": outcome.sweep_s / sum(training)}


def run(rows: int, epochs: int, trials: int, repeats: int, num_cpus: int) -> dict:
    import ray

    start_ray(num_cpus)
    # one worker of one CPU per trial: trials run side by side as the CPUs allow
    spec = with_overrides(project(rows, epochs, 512, kind="tune", extra=SWEEP.format(trials=trials)),
                          {"train.num_workers": 1})
    runs = [one_sweep(spec) for _ in range(repeats)]
    ray.shutdown()
    ratio = statistics.median(r["ratio"] for r in runs)
    summary = f"{rows:,} rows, {trials} trials: wall {ratio:.2f}× the trials' training (goal ≤ {GOAL}×)"
    return {"benchmark": "tune", "rows": rows, "epochs": epochs, "trials": trials, "repeats": repeats,
            "ray_num_cpus": num_cpus, "machine": machine(), "goal": f"sweep wall ≤ {GOAL}× the sum of its trials' "
            "training time", "results": [{"rows": rows, "ratio": ratio, "met": ratio <= GOAL, "summary": summary,
                                          "sweep_s": statistics.median(r["sweep_s"] for r in runs),
                                          "training_sum_s": statistics.median(r["training_sum_s"] for r in runs)}],
            "runs": runs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=4, help="Ray logical CPUs (a trial's worker takes 1)")
    args = parser.parse_args(argv)
    result = run(args.rows, args.epochs, args.trials, args.repeats, args.num_cpus)
    print_table(f"tune: {args.trials} trials over {args.rows:,} rows, {args.epochs} epochs",
                ["repeat", "concurrency", "sweep wall s", "sum of training s", "ratio"],
                [[str(i + 1), str(r["concurrency"]), f"{r['sweep_s']:.1f}", f"{r['training_sum_s']:.1f}",
                  f"{r['ratio']:.2f}×"] for i, r in enumerate(result["runs"])])
    print(result["results"][0]["summary"], "met" if result["results"][0]["met"] else "MISSED")
    write_result("tune", result)
    return result


if __name__ == "__main__":
    main()
