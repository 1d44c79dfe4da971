"""Training on Ray Train: tracked, packaged, registered and gated; resumes after a worker crash."""

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pyarrow as pa
import pytest
from projects import TRAIN, make_project
from ray.train import TrainingFailedError
from typer.testing import CliRunner

from mlray import dataplane
from mlray.audit import AuditLog
from mlray.cli import app
from mlray.errors import UserError
from mlray.registry.manifest import MANIFEST, MANIFEST_TAG
from mlray.registry.models import REJECTED_TAG, Registry
from mlray.registry.package import naive_utc
from mlray.spec import load_spec
from mlray.train.config import Fault
from mlray.train.run import train_model
from mlray.training import train as train_and_admit


@pytest.mark.parametrize("execution", ["local", "ray"])
def test_train_registers_a_champion_with_lineage_and_a_raw_row_pyfunc(tmp_path, starter_text, execution):
    # enough rows and steps for a model that learns (fraud is 1.6% of rows): its ROC AUC has a floor below, whether
    # the loop ran in this process (Ray Train's local mode) or on a Ray Train worker holding its shard in memory
    spec = make_project(tmp_path, starter_text, TRAIN + f"  learning_rate: 0.005\n  execution: {execution}\n", rows=20000)
    outcome = train_and_admit(spec)
    assert outcome.execution == execution
    assert outcome.decision == "champion" and outcome.model_version == "1"
    admitted = AuditLog(spec.platform).read(action="alias")  # the control plane moved the alias, audited
    assert [(e["target"], e["reason"]) for e in admitted] == [("card-fraud@champion", "v1 passed the gate")]
    assert outcome.epochs == [0, 1, 2] and outcome.task == "binary"
    assert outcome.metrics["roc_auc"] >= 0.75, outcome.metrics  # it learned: chance is 0.5
    assert 0.0 <= outcome.metrics["ece"] <= 0.2
    assert set(outcome.slices["device"]) <= {"pos", "mobile", "desktop", "atm"}

    run = mlflow.get_run(outcome.run_id)
    fitted = dataplane.feature_store(spec).load()
    assert run.data.tags["mlray.table_version"] == "1"
    assert run.data.tags["mlray.feature_version"] == fitted.version == outcome.feature_version
    assert run.data.tags["mlray.table_uri"] == dataplane.lake_of(spec).uri("transactions")
    assert "test_roc_auc" in run.data.metrics

    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["models", "list", "--spec", str(spec.path), "--json"]).stdout)
    assert [(v["version"], v["aliases"], v["table_version"]) for v in listed] == [("1", ["champion"], "1")]
    shown = json.loads(runner.invoke(app, ["models", "show", "champion", "--spec", str(spec.path), "--json"]).stdout)
    assert shown["feature_version"] == outcome.feature_version and "test_roc_auc" in shown["metrics"]
    missing = runner.invoke(app, ["models", "alias", "challenger", "7", "--spec", str(spec.path)])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: model '7' not found in the registry")

    evaluated = runner.invoke(app, ["evaluate", "champion", "--spec", str(spec.path), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    evaluated = json.loads(evaluated.stdout)  # the same model on the same held-out rows: the same numbers
    assert evaluated["model_version"] == "1" and evaluated["table_version"] == 1
    assert evaluated["metrics"] == pytest.approx(outcome.metrics, nan_ok=True)
    assert mlflow.get_run(evaluated["run_id"]).data.metrics["test_roc_auc"] == pytest.approx(outcome.metrics["roc_auc"])
    unknown = runner.invoke(app, ["evaluate", "nosuchmodel@champion", "--spec", str(spec.path)])
    assert unknown.exit_code == 2 and "model 'nosuchmodel@champion' not found" in unknown.stderr

    # The package ships the mlray code it needs and pins its other requirements: it loads where mlray is not installed.
    # Its pyfunc flavour is code (nothing pickled), and the registry holds the digest of its manifest.
    files = Path(mlflow.artifacts.download_artifacts(f"models:/{spec.name}/1"))
    assert (files / "code" / "mlray" / "registry" / "package.py").is_file()
    assert (files / "pyfunc_model.py").is_file() and not (files / "python_model.pkl").exists()
    tag = Registry(spec).client.get_model_version(spec.name, "1").tags[MANIFEST_TAG]
    assert hashlib.sha256((files / MANIFEST).read_bytes()).hexdigest() == tag
    requirements = (files / "requirements.txt").read_text()
    assert "mlray" not in requirements and "torch==" in requirements and "pyarrow==" in requirements

    raw = dataplane.lake_of(spec).read("transactions").slice(0, 5).to_pandas()
    predicted = mlflow.pyfunc.load_model(f"models:/{spec.name}@champion").predict(naive_utc(raw))
    assert list(predicted.columns) == ["prediction", "score", "feature_version"]
    assert predicted["score"].between(0, 1).all() and (predicted["feature_version"] == fitted.version).all()


def test_gate_rejects_a_worse_model_and_keeps_the_champion(tmp_path, starter_text):
    spec = make_project(tmp_path, starter_text, TRAIN.replace("epochs: 3", "epochs: 4") + "  learning_rate: 0.01\n",
                        rows=6000)
    result = CliRunner().invoke(app, ["train", "--spec", str(spec.path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    first = SimpleNamespace(**json.loads(result.stdout))
    worse_text = (tmp_path / "mlray.yaml").read_text().replace("learning_rate: 0.01", "learning_rate: 0.0000001") \
        .replace("epochs: 4", "epochs: 1") + "  gate: {tolerance: 0.0}\n"
    (tmp_path / "worse.yaml").write_text(worse_text)
    worse = train_model(load_spec(tmp_path / "worse.yaml"))
    assert first.decision == "champion"
    assert worse.decision == "rejected", worse.reasons
    registry = Registry(spec)
    assert registry.version_of("champion") == first.model_version
    tags = registry.client.get_model_version(spec.name, worse.model_version).tags
    assert "roc_auc" in tags[REJECTED_TAG]


def test_a_crashed_worker_resumes_from_its_checkpoint(tmp_path, starter_text):
    # a shard streamed from Ray Data every epoch (none held in memory), on a worker that dies once
    spec = make_project(tmp_path, starter_text, TRAIN.replace("epochs: 3", "epochs: 4") + "  shard_in_memory_mb: 0\n")
    marker = tmp_path / "crashed"
    outcome = train_model(spec, fault=Fault(epoch=1, marker=str(marker)))
    assert outcome.execution == "ray"  # a fault needs a worker to kill, whatever the size
    assert marker.read_text() == "1"  # the worker did die after epoch 1
    # Training went on from the last checkpoint Ray Train holds, not from epoch 0: no epoch before the
    # crash ran twice except possibly the one the crash interrupted, and the run still ends at epoch 3.
    assert outcome.epochs.count(0) == 1 and outcome.epochs[-1] == 3 and sorted(set(outcome.epochs)) == [0, 1, 2, 3]
    assert len(outcome.epochs) <= 5


@pytest.mark.parametrize("label, kind, classes", [("merchant_category", "multiclass", 10), ("amount", "regression", 0)])
def test_multiclass_and_regression(tmp_path, starter_text, label, kind, classes):
    text = starter_text.replace("label_column: is_fraud", f"label_column: {label}")
    reads_label = (f"name: {label},", f"column: {label},")  # feature lines that read the label column go
    text = "\n".join(line for line in text.splitlines()
                     if not (line.strip().startswith("- {") and any(part in line for part in reads_label)))
    spec = make_project(tmp_path, text, TRAIN.replace("epochs: 3", "epochs: 2"), rows=3000)
    outcome = train_model(spec)
    assert outcome.task == kind
    if kind == "multiclass":
        assert "macro_f1" in outcome.metrics and len([m for m in outcome.metrics if m.startswith("recall_")]) == classes
    else:
        assert {"rmse", "mae", "r2"} <= set(outcome.metrics)


def test_bad_training_input_fails_before_any_worker(tmp_path, starter_text):
    spec = make_project(tmp_path, starter_text.replace("  label_column: is_fraud\n", ""), rows=200)
    with pytest.raises(UserError, match="label_column is not set"):
        train_model(spec)

    one_class = tmp_path / "one"
    one_class.mkdir()
    spec = make_project(one_class, starter_text, rows=200)
    lake = dataplane.lake_of(spec)
    only_honest = lake.read("transactions").filter(pa.compute.invert(lake.read("transactions").column("is_fraud")))
    lake.open("transactions").delete()
    lake.append("transactions", only_honest, batch_id="honest")
    with pytest.raises(UserError, match="single value"):
        train_model(spec)
    assert Registry(spec).versions() == []

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    spec = make_project(tiny, starter_text, TRAIN + "  split: {validation: 0.00001, test: 0.00001}\n", rows=400)
    with pytest.raises(UserError, match=r"leaves the validation and test split\(s\) empty"):
        train_model(spec)


def test_a_resubmitted_run_resumes_where_the_failed_one_stopped(tmp_path, starter_text):
    spec = make_project(tmp_path, starter_text,
                        TRAIN.replace("epochs: 3", "epochs: 4") + "  max_failures: 0\n  execution: ray\n")
    marker = tmp_path / "crashed"
    with pytest.raises(TrainingFailedError):  # no failures allowed: the crash after epoch 1 ends the run
        train_model(spec, run_name="nightly", fault=Fault(epoch=1, marker=str(marker)))
    registry = Registry(spec)
    failed = registry.run_for("nightly")
    assert failed is not None and registry.versions() == []
    outcome = train_model(spec, run_name="nightly")  # submitted again under the same name
    assert outcome.run_id == failed  # the same MLflow run goes on
    assert outcome.epochs.count(0) == 1 and outcome.epochs[-1] == 3 and len(outcome.epochs) <= 5
