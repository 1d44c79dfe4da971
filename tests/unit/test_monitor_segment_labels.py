"""Labelled rows keep their slice values for live quality per segment, and a multiclass answer's class probabilities
for the check of its estimates; checkpoints of an older mlray still load."""

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


def test_a_multiclass_answer_keeps_its_probabilities_through_a_checkpoint():
    live = LiveQuality(3, {"1": [["old:0", "a", '"a"', 0.9, {"device": "pos"}]]})  # kept by an older mlray
    assert live.add("1", "m:0", "c", '"b"', 0.7, None, [0.2, 0.7000000004, 0.1])
    assert live.add("1", "m:1", "b", '"b"', 0.6, {"device": "web"}, [0.3, 0.6, 0.1])
    expected = [("a", None), ("c", [0.2, 0.7, 0.1]), ("b", [0.3, 0.6, 0.1])]
    assert live.labelled_probabilities("1") == expected  # kept to PROBABILITY_DIGITS decimals
    state = live.to_state()
    assert [len(row) for row in state["1"]] == [5, 6, 6]  # a row without probabilities keeps 4 or 5 items, as before
    again = LiveQuality(3, state)
    assert again.labelled_probabilities("1") == expected and again.segmented("1") == live.segmented("1")
    assert live.add("1", "m:2", "a", '"a"', 0.8) and live.labelled_probabilities("1")[0] == ("c", [0.2, 0.7, 0.1])


def test_labelled_rows_name_the_positive_class_as_text_and_drop_rows_they_cannot_use():
    rows = [("TRUE", 0.9, {"device": "pos"}), ("false", 0.1, {"device": "atm"}), ("maybe", 0.5, {"device": "pos"}),
            ("true", None, {"device": "pos"}), ("false", float("nan"), {"device": "pos"})]
    found = labelled_rows([False, True], rows)
    assert found.truth.tolist() == [1, 0] and np.allclose(found.scores, [0.9, 0.1])
    assert found.inputs.column("device").to_pylist() == ["pos", "atm"]
    assert labelled_rows([False, True], [("maybe", 0.5, {"device": "pos"})]) is None
