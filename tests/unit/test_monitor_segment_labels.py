"""Labelled rows keep their slice values for live quality per segment; checkpoints of an older mlray still load."""

import numpy as np

from mlray.monitor.live import LiveQuality
from mlray.monitor.segments import labelled_rows


def test_a_checkpoint_of_four_items_a_row_loads_and_new_rows_carry_their_segments():
    old = {"1": [[f"r{i}:0", "true" if i % 4 == 0 else "false", "true", 0.9 if i % 4 == 0 else 0.2] for i in range(40)]}
    live = LiveQuality(100, old)
    before = live.metrics("binary", [False, True], 0.5, min_labels=10, min_class_labels=5)
    assert before["1"]["roc_auc"] == 1.0 and live.segmented("1") == []
    assert live.add("1", "new:0", "True", "true", 0.8, {"device": "mobile"})
    assert live.segmented("1") == [("True", 0.8, {"device": "mobile"})]
    again = LiveQuality(100, live.to_state())
    assert again.segmented("1") == live.segmented("1") and again.counts() == {"1": 41}


def test_labelled_rows_name_the_positive_class_as_text_and_drop_rows_they_cannot_use():
    rows = [("TRUE", 0.9, {"device": "pos"}), ("false", 0.1, {"device": "atm"}), ("maybe", 0.5, {"device": "pos"}),
            ("true", None, {"device": "pos"}), ("false", float("nan"), {"device": "pos"})]
    found = labelled_rows([False, True], rows)
    assert found.truth.tolist() == [1, 0] and np.allclose(found.scores, [0.9, 0.1])
    assert found.inputs.column("device").to_pylist() == ["pos", "atm"]
    assert labelled_rows([False, True], [("maybe", 0.5, {"device": "pos"})]) is None
