"""The monitor's windows over a real local inference log (no Ray, no MLflow): a window is checked at the first poll
after it is complete, whether or not more traffic follows."""

import uuid

import pytest
from monitor_fakes import FakeDrift, FakeGauges, FakeReferences, FakeServing

from mlray.lake import Lake
from mlray.monitor.watch import Monitor
from mlray.serve.logbook import InferenceLog, create_tables, log_schema

WINDOW, COMMIT, COMMITS = 200, 300, 8  # 2,400 served rows in 8 commits: 12 complete windows


@pytest.fixture
def served(project):
    """A monitor with its checkpoint written before any traffic, and a replica's inference log to serve into; the
    drift checks, the champion's reference (MLflow) and the metrics (Ray) are fakes."""
    rules = project.monitor.model_copy(update={"window_rows": WINDOW, "min_window_rows": 100})
    spec = project.model_copy(update={"monitor": rules})
    lake = Lake.from_platform(spec.platform)
    create_tables(spec, lake)
    monitor = Monitor(spec, serving=FakeServing("1"), load_reference=FakeReferences(), make_detectors=FakeDrift(),
                      gauges=FakeGauges())
    monitor.status()
    return monitor, InferenceLog(lake, spec.serve.inference_log_table, log_schema(spec))


def commit(log: InferenceLog, rows: int = COMMIT) -> None:
    """One flush of `rows` served rows, 10 per request, each with a shadow copy that no window holds."""
    for _ in range(rows // 10):
        request = uuid.uuid4().hex
        log.record(request, "1", [{} for _ in range(10)], [{"prediction": True}] * 10, 1.0)
        log.record(request, "2", [{} for _ in range(10)], [{"prediction": False}] * 10, 1.0, shadow=True)
    assert log.flush() == 2 * rows


def windows(monitor: Monitor) -> list[int]:
    return [w["rows"] for w in monitor.step()["windows"]]


def test_rows_committed_then_silence_every_complete_window_is_checked_at_the_next_poll(served):
    monitor, log = served
    for _ in range(COMMITS):
        commit(log)
    assert windows(monitor) == [WINDOW] * 12
    assert monitor.checkpoint.cursor[1] == COMMIT and windows(monitor) == []


def test_windows_left_by_a_poll_during_traffic_are_checked_at_the_first_poll_after_it(served):
    """The issue's timeline: polls while 5 commits land check 7 windows, 3 more commits land, then traffic stops."""
    monitor, log = served
    seen = []
    for _ in range(5):
        commit(log)
        seen += windows(monitor)
    assert seen == [WINDOW] * 7
    for _ in range(3):
        commit(log)
    assert windows(monitor) == [WINDOW] * 5
    assert monitor.checkpoint.seq == 12 and windows(monitor) == []


def test_windows_read_a_log_across_the_upgrade_that_added_the_probabilities(project):
    """A log from before `probabilities` gains it in place; the monitor reads rows from before and after the upgrade
    in one change-feed read, the older ones without probabilities."""
    from mlray.monitor.windows import Cursor, read_from

    lake, table = Lake.from_platform(project.platform), project.serve.inference_log_table
    older = log_schema(project).remove(log_schema(project).get_field_index("probabilities"))
    lake.create(table, older)
    before = InferenceLog(lake, table, older)
    before.record("r1", "1", [{}], [{"prediction": "a"}], 1.0)
    assert before.flush() == 1
    create_tables(project, lake)  # a deploy of this mlray
    after = InferenceLog(lake, table, log_schema(project))
    after.record("r2", "1", [{}], [{"prediction": "b", "probability_a": 0.25, "probability_b": 0.75}], 1.0)
    assert after.flush() == 1
    rows = read_from(lake, table, Cursor(0, 0))
    assert rows.column("request_id").to_pylist() == ["r1", "r2"]
    assert rows.column("probabilities").to_pylist() == [None, [0.25, 0.75]]
