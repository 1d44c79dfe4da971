"""The batch-prediction output schema is known from the package config alone and fits what the package predicts."""

import pickle

import numpy as np
import pyarrow as pa
import pytest

from mlray.batch.predict import output_schema
from mlray.batch.scorer import scored_rows
from mlray.errors import UserError
from mlray.features import fit
from mlray.lake.synthetic import generate_transactions
from mlray.registry.package import PackageConfig, predict_arrays, predict_frame, prediction_records, prediction_schema
from mlray.registry.scoring import Scoring
from mlray.spec import ModelSpec, parse_spec, starter_spec

ROWS = generate_transactions(64, seed=3)
ID = ROWS.schema.field("transaction_id")
LINEAGE = {"model_name": "card-fraud", "model_version": 4, "input_table_version": 7}


def package(task: str, classes: list):
    fitted = fit(ROWS, parse_spec(starter_spec()).features)
    config = PackageConfig(task, "label", classes, len(fitted.numeric_names), fitted.cardinalities,
                           ModelSpec(hidden=[8]).model_dump(mode="json"), feature_version=fitted.version)
    return config.network().eval(), config, fitted


@pytest.mark.parametrize("task, classes, columns, prediction_type", [
    ("binary", [False, True], ["prediction", "score"], pa.bool_()),
    ("binary", ["no", "yes"], ["prediction", "score"], pa.string()),
    ("multiclass", [1, 2, 3], ["prediction", "probability_1", "probability_2", "probability_3"], pa.int64()),
    ("regression", [], ["prediction"], pa.float64()),
])
def test_output_schema_fits_what_predict_frame_makes(task, classes, columns, prediction_type):
    net, config, fitted = package(task, classes)
    schema = output_schema(config, ID)
    assert schema.names == ["transaction_id", *columns, "feature_version", "model_name", "model_version",
                            "input_table_version"]
    assert schema.field("prediction").type == prediction_type
    assert prediction_schema(config).names == [*columns, "feature_version"]

    rows = scored_rows(ROWS.column("transaction_id"), predict_arrays(net, config, fitted, ROWS), LINEAGE, schema, "out")
    assert rows.schema == schema and rows.num_rows == 64
    assert rows.column("transaction_id").equals(ROWS.column("transaction_id"))
    assert set(rows.column("model_version").to_pylist()) == {4}
    assert set(rows.column("feature_version").to_pylist()) == {fitted.version}
    empty = scored_rows(ROWS.column("transaction_id").slice(0, 0), predict_arrays(net, config, fitted, ROWS.slice(0, 0)),
                        LINEAGE, schema, "out")
    assert empty.schema == schema and empty.num_rows == 0


@pytest.mark.parametrize("task, classes", [("binary", ["no", "yes"]), ("multiclass", [1, 2, 3]), ("regression", [])])
def test_the_pyfunc_frame_the_batch_arrays_and_the_served_records_hold_the_same_predictions(task, classes):
    net, config, fitted = package(task, classes)
    frame, arrays = predict_frame(net, config, fitted, ROWS), predict_arrays(net, config, fitted, ROWS)
    assert list(frame.columns) == list(arrays)
    for name, values in arrays.items():
        assert frame[name].tolist() == values.to_pylist(), name
    records = prediction_records(arrays)  # what a service answers, built without pandas
    assert records == frame.to_dict("records")
    assert all(type(r["prediction"]) is type(f) for r, f in zip(records, frame["prediction"].tolist()))


def test_a_scoring_sent_to_another_process_predicts_the_same():
    net, config, fitted = package("binary", [False, True])
    scoring = Scoring(net, config, fitted)
    copy = pickle.loads(pickle.dumps(scoring))
    assert copy is not scoring and not copy.net.training
    np.testing.assert_array_equal(copy.arrays(ROWS)["score"].to_numpy(), scoring.arrays(ROWS)["score"].to_numpy())


def test_an_id_column_named_like_an_output_column_is_refused():
    _, config, _ = package("regression", [])
    with pytest.raises(UserError, match="id column 'prediction'"):
        output_schema(config, pa.field("prediction", pa.string()))
