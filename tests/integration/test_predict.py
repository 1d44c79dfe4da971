"""Batch inference: a registered model scores a Delta table on Ray Data, in one idempotent commit."""

import json

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from mlray import dataplane
from mlray.batch.predict import predict_table
from mlray.cli import app
from mlray.errors import UserError
from mlray.lake.synthetic import generate_transactions
from mlray.registry.package import naive_utc

OUTPUT_COLUMNS = ["transaction_id", "prediction", "score", "feature_version", "model_name", "model_version",
                  "input_table_version"]


@pytest.fixture(scope="module")
def trained(small_model):
    """The run's small model, and a table to score."""
    spec, outcome = small_model
    scoring = generate_transactions(1500, seed=7, id_prefix="s").drop_columns(["is_fraud"])
    dataplane.lake_of(spec).append("to_score", scoring, batch_id="scoring", schema=scoring.schema)
    return spec, outcome


@pytest.mark.parametrize("execution", ["local", "ray"])
def test_batch_predictions_match_the_pyfunc_and_commit_once(trained, execution):
    spec, trained_outcome = trained
    lake = dataplane.lake_of(spec)
    source, out = f"to_score_{execution}", f"scores_{execution}"
    rows = generate_transactions(1500, seed=7, id_prefix="s").drop_columns(["is_fraud"])
    lake.append(source, rows, batch_id="scoring", schema=rows.schema)
    outcome = predict_table(spec, f"{spec.name}@champion", source, out, execution=execution)
    assert outcome.execution == execution
    assert outcome.committed and outcome.rows == 1500 and outcome.table_version == lake.latest_version(source)
    assert outcome.model_version == trained_outcome.model_version
    assert outcome.feature_version == trained_outcome.feature_version
    history = lake.history(out)
    assert [h["operation"] for h in history] == ["WRITE", "CREATE TABLE"] and outcome.out_version == 1
    assert history[0]["batch_id"] == f"predict:{spec.name}:{outcome.model_version}:{source}@{outcome.table_version}"

    scores = lake.read(out)
    assert scores.column_names == OUTPUT_COLUMNS
    assert pc.all(pc.equal(scores.column("model_version"), int(outcome.model_version))).as_py()
    assert pc.all(pc.equal(scores.column("feature_version"), outcome.feature_version)).as_py()
    assert pc.all(pc.equal(scores.column("input_table_version"), outcome.table_version)).as_py()
    raw = lake.read(source).to_pandas()
    expected = mlflow.pyfunc.load_model(f"models:/{spec.name}/{outcome.model_version}").predict(naive_utc(raw))
    expected["transaction_id"] = raw["transaction_id"]
    joined = scores.to_pandas().merge(expected, on="transaction_id", suffixes=("", "_pyfunc"))
    assert len(joined) == 1500 == scores.num_rows
    assert (joined["prediction"] == joined["prediction_pyfunc"]).all()
    np.testing.assert_allclose(joined["score"], joined["score_pyfunc"], atol=1e-6)

    again = CliRunner().invoke(app, ["predict", "--model", f"{spec.name}/{outcome.model_version}", "--table",
                                     source, "--out", out, "--spec", str(spec.path), "--json"])
    assert again.exit_code == 0, again.output  # the same version on the same snapshot: nothing new
    shown = json.loads(again.stdout)
    assert (shown["committed"], shown["rows"], shown["out_version"]) == (False, 0, 1)
    assert lake.latest_version(out) == 1 and lake.read(out).num_rows == 1500

    lake.append(source, generate_transactions(100, seed=9, id_prefix="t").drop_columns(["is_fraud"]),
                batch_id="more")
    newer = predict_table(spec, "champion", source, out)  # a new input version: one more commit
    assert newer.committed and newer.rows == 1600 and newer.out_version == 2
    versions = lake.read(out).column("input_table_version")
    assert sorted(pc.unique(versions).to_pylist()) == [outcome.table_version, newer.table_version]


def test_user_mistakes_fail_before_any_ray_work_in_one_line(trained):
    spec, _ = trained
    lake = dataplane.lake_of(spec)
    with pytest.raises(UserError, match="not found in the registry"):
        predict_table(spec, "no-such-model@champion", "to_score", "never")
    with pytest.raises(UserError, match="not found in the registry"):
        predict_table(spec, "42", "to_score", "never")
    with pytest.raises(UserError, match="table 'missing' does not exist"):
        predict_table(spec, "champion", "missing", "never")
    partial = lake.read("to_score").drop_columns(["amount", "country"])
    lake.append("partial", partial, batch_id="partial", schema=partial.schema)
    with pytest.raises(UserError, match="lacks column.s. amount, country"):
        predict_table(spec, "champion", "partial", "never")
    assert not lake.exists("never")

    lake.create("nothing", lake.read("to_score").schema)
    empty = predict_table(spec, "champion", "nothing", "scores_of_nothing")  # an empty input still commits once
    assert (empty.committed, empty.rows, empty.table_version) == (True, 0, 0)
    assert lake.read("scores_of_nothing").schema.names == OUTPUT_COLUMNS

    result = CliRunner().invoke(app, ["predict", "--model", "nobody@champion", "--table", "to_score",
                                      "--out", "never", "--spec", str(spec.path)])
    assert result.exit_code == 2
    assert "not found in the registry" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_a_batch_another_job_committed_meanwhile_is_not_committed_twice(tmp_path):
    """Two jobs with the same batch id both pass the early check; at commit time only the first one lands."""
    from ray.data.datasource.datasink import WriteResult

    from mlray.lake import Lake
    from mlray.lake.sink import TransactionalDeltaSink
    from mlray.lake.tables import BATCH_APP_PREFIX

    lake = Lake(str(tmp_path / "lake"))
    schema = pa.schema([("id", pa.string())])
    lake.create("out", schema)
    sinks = [TransactionalDeltaSink(lake.uri("out"), "out", schema, BATCH_APP_PREFIX + "b", {}) for _ in range(2)]
    for sink in sinks:
        sink.on_write_complete(WriteResult(num_rows=0, size_bytes=0, write_returns=[]))
    assert [s.committed for s in sinks] == [True, False] and [s.version for s in sinks] == [1, 1]
    assert lake.committed("out", "b")
