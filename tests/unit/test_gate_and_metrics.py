import numpy as np
import pyarrow as pa
import pytest

from mlray.quality import expected_calibration_error, slice_metrics, task_metrics
from mlray.registry.gate import decide
from mlray.spec import GateSpec, SplitSpec
from mlray.train.data import LabelEncoding, split_index


def test_gate_floors_ceilings_and_the_champion():
    gate = GateSpec(min_metrics={"roc_auc": 0.7}, tolerance=0.01)
    assert decide("binary", {"roc_auc": 0.8}, gate, None).passed
    low = decide("binary", {"roc_auc": 0.6}, gate, None)
    assert not low.passed and "below the minimum 0.7" in low.summary
    assert decide("binary", {"roc_auc": 0.795}, gate, {"roc_auc": 0.80}).passed
    worse = decide("binary", {"roc_auc": 0.75}, gate, {"roc_auc": 0.80})
    assert not worse.passed and "vs the champion's 0.8000" in worse.summary
    rmse = GateSpec(max_metrics={"rmse": 5.0}, tolerance=0.5)
    assert decide("regression", {"rmse": 4.0}, rmse, {"rmse": 3.6}).passed
    assert not decide("regression", {"rmse": 4.2}, rmse, {"rmse": 3.6}).passed
    assert not decide("regression", {"rmse": 6.0}, rmse, None).passed


def test_binary_metrics_and_calibration():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.3, 0.8, 0.7, 0.6, 0.4])
    m = task_metrics("binary", y, p, threshold=0.5)
    assert m["roc_auc"] == pytest.approx(8 / 9)  # 8 of 9 positive-negative pairs ranked right
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert expected_calibration_error(np.array([1, 1, 0, 0]), np.array([1.0, 1.0, 0.0, 0.0])) == 0.0


def test_multiclass_regression_and_slices():
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    m = task_metrics("multiclass", np.array([0, 1, 2, 1]), probs, classes=["a", "b", "c"])
    assert m["accuracy"] == 0.75 and m["recall_b"] == 0.5 and m["recall_a"] == 1.0
    r = task_metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert r["rmse"] == pytest.approx(np.sqrt(1 / 3)) and r["mae"] == pytest.approx(1 / 3)
    y = np.array([0, 1] * 30)
    s = slice_metrics("binary", y, y * 0.9, {"country": np.array(["US"] * 40 + ["FR"] * 20)})
    assert s["country"]["US"]["rows"] == 40 and s["country"]["US"]["roc_auc"] == 1.0


def test_split_is_stable_and_near_the_declared_fractions():
    ids = pa.array([f"id-{i}" for i in range(20_000)])
    split = SplitSpec(validation=0.1, test=0.2)
    first, again = split_index(ids, split), split_index(ids.slice(5_000), split)
    assert (first[5_000:] == again).all()  # a row's split does not depend on what else is in the table
    shares = np.bincount(first, minlength=3) / len(first)
    assert shares == pytest.approx([0.7, 0.1, 0.2], abs=0.02)


def test_label_encoding():
    enc = LabelEncoding("y", "multiclass", ["a", "b", "c"])
    assert enc.encode(pa.array(["c", "a", "z", None])).tolist() == [2, 0, -1, -1]
    assert LabelEncoding("y", "binary", [False, True]).encode(pa.array([True, False])).tolist() == [1, 0]
    assert LabelEncoding("y", "regression").encode(pa.array([1, 2])).dtype == np.float32
