from datetime import datetime, timezone

import pyarrow as pa
import pytest

from mlray.lake.rules import bad_rows_mask, check_rows, row_reasons
from mlray.lake.schema import parse_column
from mlray.spec import TableSpec


@pytest.mark.parametrize("kind, text, expected", [
    ("int", [" 42", "-7", "3.5", "x", None], [42, -7, None, None, None]),
    ("float", ["1.5", "1e3", ".5", "abc", ""], [1.5, 1000.0, 0.5, None, None]),
    ("bool", ["true", "No", "1", "maybe", None], [True, False, True, None, None]),
    ("date", ["2024-02-29", "2024-02-30", None], [datetime(2024, 2, 29).date(), None, None]),
])
def test_text_parses_per_value_and_flags_only_bad_values(kind, text, expected):
    typed, failed = parse_column(pa.array(text, pa.string()), kind)
    assert typed.to_pylist() == expected
    assert failed.to_pylist() == [v is not None and v.strip() != "" and e is None for v, e in zip(text, expected)]


def test_timestamps_without_a_zone_are_utc_and_impossible_dates_fail():
    typed, failed = parse_column(pa.array(["2024-01-02 03:04:05", "2024-01-02T03:04:05+02:00", "2024-13-01"]),
                                 "timestamp")
    assert typed[0].as_py() == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert typed[1].as_py() == datetime(2024, 1, 2, 1, 4, 5, tzinfo=timezone.utc)
    assert failed.to_pylist() == [False, False, True]


def test_typed_inputs_cast_and_nan_is_missing():
    typed, failed = parse_column(pa.array([1, 2, None], pa.int32()), "float")
    assert typed.to_pylist() == [1.0, 2.0, None] and not any(failed.to_pylist())
    typed, _ = parse_column(pa.array([1.0, float("nan")]), "float")
    assert typed.to_pylist() == [1.0, None]


TABLE = TableSpec.model_validate({
    "columns": {
        "id": {"type": "string", "nullable": False},
        "price": {"type": "float", "min": 0, "max": 100},
        "color": {"type": "string", "allowed": ["red", "blue"]},
        "n": "int",
    },
    "id_column": "id",
})


def test_row_rules_give_one_reason_per_broken_rule():
    raw = pa.table({"id": ["a", None, "c", "d"], "price": ["5", "-1", "abc", "500"],
                    "color": ["red", "green", "blue", None], "n": ["1", "2", "three", "4"]})
    typed, violations = check_rows(raw, TABLE)
    reasons = row_reasons(violations, raw.num_rows).to_pylist()
    assert reasons[0] is None
    assert reasons[1] == ("id: missing value (the column is not nullable); price: '-1' is below min 0; "
                          "color: 'green' is not an allowed value")
    assert reasons[2] == "price: 'abc' is not a number; n: 'three' is not an integer"
    assert reasons[3] == "price: '500' is above max 100"
    assert bad_rows_mask(violations, 4).to_pylist() == [False, True, True, True]
    assert typed.schema.field("price").type == pa.float64()
    assert {(v.column, v.rule): v.count for v in violations} == {
        ("id", "not_null"): 1, ("price", "type"): 1, ("price", "min"): 1, ("price", "max"): 1,
        ("color", "allowed"): 1, ("n", "type"): 1}


def test_good_rows_have_no_violations():
    raw = pa.table({"id": ["a"], "price": [3.0], "color": ["red"], "n": [1]})
    _, violations = check_rows(raw, TABLE)
    assert violations == []
