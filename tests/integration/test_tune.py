"""Sweeps on Ray Tune: trials are Ray Train runs and MLflow child runs; the best one is registered."""

import json

import pytest
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from projects import make_project
from typer.testing import CliRunner

from mlray.cli import app
from mlray.errors import UserError
from mlray.registry.models import Registry
from mlray.registry.package import load_package
from mlray.spec import load_spec
from mlray.train.sweep import tune_model

SWEEP = """
train:
  epochs: 3
  num_workers: 1
  batch_size: 256
  cpus_per_worker: 0.5
  early_stopping: null
tune:
  trials: 3
  max_concurrent: 2
  scheduler: {grace_period: 1, reduction_factor: 3}
  space:
    train.learning_rate: {loguniform: [0.0003, 0.03]}
    model.hidden: {choice: [[16], [32, 16]]}
"""


@pytest.mark.parametrize("execution", ["auto", "ray"])
def test_a_sweep_tracks_every_trial_and_registers_the_best(tmp_path, starter_text, execution):
    # auto: one-worker trials train in their own process; ray: each trial's TorchTrainer starts a worker
    sweep = SWEEP.replace("  num_workers: 1\n", f"  num_workers: 1\n  execution: {execution}\n")
    spec = make_project(tmp_path, starter_text, sweep, rows=3000)
    result = CliRunner().invoke(app, ["tune", "--spec", str(spec.path), "--name", "sweep-1", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)

    trials = outcome["trials"]
    assert len(trials) == 3 and outcome["concurrency"] == 2
    assert all(t["status"] in ("finished", "stopped early") and 1 <= t["epochs"] <= 3 for t in trials)
    assert all(t["training_s"] > 0 for t in trials) and outcome["sweep_s"] > max(t["training_s"] for t in trials)
    for trial in trials:  # every trial sampled inside the declared space
        assert 0.0003 <= trial["params"]["train.learning_rate"] <= 0.03
        assert trial["params"]["model.hidden"] in ([16], [32, 16])
    best = min(trials, key=lambda t: t["best_val_loss"])
    assert outcome["best_trial"] == best["trial_id"]

    client = Registry(spec).client
    children = client.search_runs([client.get_run(outcome["parent_run_id"]).info.experiment_id],
                                  f"tags.{MLFLOW_PARENT_RUN_ID} = '{outcome['parent_run_id']}'")
    assert sorted(r.info.run_id for r in children) == sorted(t["run_id"] for t in trials)
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)  # ASHA-stopped trials are closed as KILLED
    assert all(r.data.tags["mlray.table_version"] == "1" for r in children)

    model = outcome["model"]
    assert model["decision"] == "champion" and model["run_id"] == best["run_id"]
    package = load_package(f"models:/{spec.name}@champion")
    assert package.config.model["hidden"] == best["params"]["model.hidden"]  # the best trial's network was packaged


def test_a_wrong_search_space_fails_before_any_trial(tmp_path, starter_text):
    bad = SWEEP.replace("{loguniform: [0.0003, 0.03]}", "{loguniform: [0, 0.03]}")
    runner = CliRunner()
    make_project(tmp_path, starter_text, rows=200)
    (tmp_path / "mlray.yaml").write_text((tmp_path / "mlray.yaml").read_text().split("\ntrain:")[0] + bad)
    result = runner.invoke(app, ["tune", "--spec", str(tmp_path / "mlray.yaml")])
    assert result.exit_code == 2
    assert "tune.space: 'train.learning_rate': loguniform needs [low, high] with 0 < low < high" in result.stderr
    assert "Traceback" not in result.output

    empty = tmp_path / "empty.yaml"
    empty.write_text((tmp_path / "mlray.yaml").read_text().split("\ntune:")[0])
    with pytest.raises(UserError, match="tune.space is empty"):
        tune_model(load_spec(empty))
    assert Registry(load_spec(empty)).versions() == []
