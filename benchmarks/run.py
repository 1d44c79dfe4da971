"""Run every benchmark, each in its own process (its own Ray), and print their ratios.

    python benchmarks/run.py            # all, default sizes
    python benchmarks/run.py --quick    # small sizes, to check they run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
BENCHMARKS = {
    "featurize": {"full": [], "quick": ["--rows", "200000", "--repeats", "1"]},
    "train": {"full": [], "quick": ["--rows", "50000", "--epochs", "3", "--repeats", "1"]},
    "tune": {"full": [], "quick": ["--rows", "50000", "--repeats", "1"]},
    "batch_predict": {"full": [], "quick": ["--rows", "100000", "--repeats", "1"]},
    "serve": {"full": [], "quick": ["--duration", "3", "--warmup", "1"]},
    "drift": {"full": [], "quick": ["--windows", "2", "--after", "3", "--rows", "10000", "--labels-before", "50"]},
    "monitoring": {"full": [], "quick": ["--seeds", "2"]},
}


def summary(entry: dict) -> str:
    """One result entry in a line: its own `summary` when it has one, else its size and ratio."""
    if "summary" in entry:
        return entry["summary"]
    workers = f" {w} worker(s)" if (w := entry.get("workers")) else " local mode" if entry.get("execution") else ""
    return f"{entry['rows']:,} rows{workers} {entry['ratio']:.2f}×"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(BENCHMARKS), help="Benchmarks to run.")
    parser.add_argument("--quick", action="store_true", help="Small sizes: checks they run, measures little.")
    args = parser.parse_args()
    failed = []
    for name in args.names:
        extra = BENCHMARKS[name]["quick" if args.quick else "full"]
        print(f"== {name}", flush=True)
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *extra], cwd=ROOT)
        if code:
            failed.append(name)
    for name in args.names:
        path = ROOT / "benchmarks" / "results" / f"{name}.json"
        if path.is_file():
            result = json.loads(path.read_text())
            ratios = ", ".join(summary(r) for r in result["results"])
            print(f"{name}: {ratios} (goal {result['goal']})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
