"""The control plane's durable state: a JSON document per revision in a Delta table, changed by compare-and-swap."""

import threading

import pytest
from deltalake import DeltaTable

from mlray.lake import Lake
from mlray.lake.state import StateConflict, StateTable


def test_a_document_reads_back_at_the_revision_it_was_written(tmp_path):
    table = StateTable(Lake(str(tmp_path)), "serving_state")
    assert table.read() == (0, None)
    first = table.write({"plan": {"champion": "1"}}, expected=0, writer="user:a")
    second = table.write({"plan": {"champion": "2"}, "keys": ["sha256:x"]}, expected=first)
    assert (first, second) == (1, 2)
    assert StateTable(Lake(str(tmp_path)), "serving_state").read() == (2, {"plan": {"champion": "2"}, "keys": ["sha256:x"]})
    assert DeltaTable(str(tmp_path / "serving_state")).version() == 2  # plain deltalake reads it too


def test_a_write_based_on_an_old_revision_is_refused_and_changes_nothing(tmp_path):
    table = StateTable(Lake(str(tmp_path)), "serving_state")
    table.write({"n": 1}, expected=0)
    table.write({"n": 2}, expected=1)
    with pytest.raises(StateConflict, match="expected revision 1, found 2"):
        table.write({"n": 99}, expected=1)
    assert table.read() == (2, {"n": 2})


def test_of_two_writers_racing_from_the_same_revision_exactly_one_wins(tmp_path):
    lake = Lake(str(tmp_path))
    StateTable(lake, "serving_state").write({"n": 0}, expected=0)
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def writer(i: int) -> None:
        start.wait()
        try:
            StateTable(Lake(str(tmp_path)), "serving_state").write({"n": i}, expected=1)
            outcomes.append("won")
        except StateConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["won"]
    assert StateTable(lake, "serving_state").read()[0] == 2
