"""Small training projects for the integration tests: the starter spec, a train section, synthetic rows."""

from mlray import dataplane
from mlray.lake.schema import arrow_schema
from mlray.lake.synthetic import Shift, generate_transactions
from mlray.spec import load_spec

TRAIN = """
train:
  epochs: 3
  batch_size: 256
  cpus_per_worker: 0.5
  early_stopping: null
  slices: [device]
"""

SMALL_MODEL = """
train:
  num_workers: 1
  epochs: 1
  batch_size: 256
  cpus_per_worker: 0.5
  early_stopping: null
"""
SERVE_KEY = "test-key-123-0123456789abcdefghijklmn"


def make_project(tmp_path, starter_text, extra=TRAIN, rows=4000, seed=1, shift=Shift()):
    text = starter_text.replace("min_rows: 1000", "min_rows: 10").replace("\ntrain: {}", "") + extra
    (tmp_path / "mlray.yaml").write_text(text)
    spec = load_spec(tmp_path / "mlray.yaml")
    dataplane.lake_of(spec).append("transactions", generate_transactions(rows, seed=seed, shift=shift),
                                   batch_id=f"seed-{seed}", schema=arrow_schema(spec.train_table))
    return spec
