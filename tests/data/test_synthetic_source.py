"""Data tests (in the Made-With-ML sense) of the synthetic card-transaction source."""

import numpy as np
import pyarrow.compute as pc
import pytest

from mlray import dataplane
from mlray.lake.schema import arrow_schema
from mlray.lake.synthetic import Shift, generate_transactions


def fraud_rate(table) -> float:
    return pc.mean(table.column("is_fraud").cast("int8")).as_py()


def test_same_seed_same_rows_other_seed_other_rows():
    a, b = generate_transactions(500, seed=1), generate_transactions(500, seed=1)
    assert a.drop_columns(["event_time"]).equals(b.drop_columns(["event_time"]))
    assert not a.column("amount").equals(generate_transactions(500, seed=2).column("amount"))


def test_generated_data_meets_its_own_spec(project):
    lake = dataplane.lake_of(project)
    lake.append("transactions", generate_transactions(3000, seed=3), schema=arrow_schema(project.train_table))
    report, _ = dataplane.validate_table(project)
    assert report.passed, report.summary()


def test_fraud_is_rare_and_depends_plausibly_on_the_inputs():
    data = generate_transactions(60_000, seed=4)
    rate = fraud_rate(data)
    assert 0.005 < rate < 0.05
    fraud = data.filter(data.column("is_fraud"))
    honest = data.filter(pc.invert(data.column("is_fraud")))
    assert np.median(fraud.column("amount")) > np.median(honest.column("amount"))
    def night_share(table):
        return pc.mean(pc.less(pc.hour(table.column("event_time")), 6).cast("int8")).as_py()

    assert night_share(fraud) > 1.5 * night_share(honest)


@pytest.mark.parametrize("shift, check", [
    (Shift(covariate=1.0), lambda base, moved: np.median(moved["amount"]) > 1.3 * np.median(base["amount"])),
    (Shift(prior=1.0), lambda base, moved: fraud_rate(moved) > 3 * fraud_rate(base)),
])
def test_shift_knobs_move_the_distributions(shift, check):
    base = generate_transactions(40_000, seed=5)
    moved = generate_transactions(40_000, seed=5, shift=shift)
    assert check(base, moved)


def test_concept_shift_keeps_inputs_and_changes_what_they_mean():
    base = generate_transactions(40_000, seed=6)
    moved = generate_transactions(40_000, seed=6, shift=Shift(concept=1.0))
    assert base.column("amount").equals(moved.column("amount"))
    def rate_on_big_payments(table):
        return fraud_rate(table.filter(pc.greater(table.column("amount"), 200)))

    assert rate_on_big_payments(moved) < rate_on_big_payments(base) / 2
