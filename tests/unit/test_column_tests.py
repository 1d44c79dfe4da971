"""The per-column two-sample tests the segment checks run: valid p-values, power, and Alibi's TabularDrift numbers.

| behaviour | test |
|---|---|
| identical distributions: ~5% of p-values below 0.05 (KS, chi-squared) | test_p_values_are_uniform_on_identical_... |
| KS on many ties (counts) is conservative, never liberal | test_ks_on_tied_counts_is_conservative |
| a 0.3-sd shift over 1,000 vs 1,000 rows: p < 0.01 | test_a_small_numeric_shift_is_found |
| a category the window adds, or a moved share, is found | test_a_new_or_moved_category_is_found |
| the same p-values and distances as TabularDrift | test_the_numbers_are_alibis |
| malformed calls are refused | test_malformed_calls_are_refused |
"""

import numpy as np
import pytest

from mlray.monitor.column_tests import column_p_values

SHARES = [0.3, 0.25, 0.2, 0.15, 0.1]


def mixed(rng: np.random.Generator, rows: int, shift: float = 0.0) -> np.ndarray:
    """A continuous column, a five-category column (codes 1-5) and a count column (many ties)."""
    return np.column_stack([rng.normal(shift, 1.0, rows), 1.0 + rng.choice(5, rows, p=SHARES),
                            rng.poisson(3.0, rows).astype(float)])


def test_p_values_are_uniform_on_identical_distributions():
    rng = np.random.default_rng(7)
    found = np.array([column_p_values(["numeric", "categorical"], mixed(rng, 500)[:, :2], mixed(rng, 400)[:, :2])[0]
                      for _ in range(500)])
    below = (found < 0.05).mean(axis=0)
    assert 0.03 <= below[0] <= 0.07 and 0.03 <= below[1] <= 0.07, below
    assert 0.4 <= np.median(found[:, 0]) <= 0.6 and 0.4 <= np.median(found[:, 1]) <= 0.6


def test_ks_on_tied_counts_is_conservative():
    rng = np.random.default_rng(8)
    found = np.array([column_p_values(["numeric"], mixed(rng, 500)[:, 2:], mixed(rng, 400)[:, 2:])[0][0]
                      for _ in range(300)])
    assert (found < 0.05).mean() <= 0.05


def test_a_small_numeric_shift_is_found():
    rng = np.random.default_rng(9)
    found = [column_p_values(["numeric"], rng.normal(0, 1, (1000, 1)), rng.normal(0.3, 1, (1000, 1)))[0][0]
             for _ in range(100)]
    assert np.mean(np.array(found) < 0.01) >= 0.8


def test_a_new_or_moved_category_is_found():
    rng = np.random.default_rng(10)
    reference = 1.0 + rng.choice(3, (1000, 1), p=[0.5, 0.3, 0.2])
    newcomer = np.vstack([1.0 + rng.choice(3, (950, 1), p=[0.5, 0.3, 0.2]), np.full((50, 1), 9.0)])
    moved = 1.0 + rng.choice(3, (1000, 1), p=[0.4, 0.3, 0.3])
    assert column_p_values(["categorical"], reference, newcomer)[0][0] < 1e-6
    assert column_p_values(["categorical"], reference, moved)[0][0] < 1e-3
    same, distance = column_p_values(["categorical"], np.ones((50, 1)), np.ones((40, 1)))
    assert same[0] == 1.0 and distance[0] == 0.0  # one category either side: nothing to compare


def test_the_numbers_are_alibis():
    from alibi_detect.cd import TabularDrift  # heavy (seconds): only this test

    rng = np.random.default_rng(11)
    kinds = ["numeric", "categorical", "numeric", "categorical", "categorical", "numeric"]
    for case in range(12):
        rows_ref, rows = rng.integers(30, 1500, 2)
        shift = 0.15 * (case % 3)

        def sample(n: int, moved: float) -> np.ndarray:
            return np.column_stack([
                rng.normal(moved, 1.0, n), rng.choice([0.0, 1.0, 2.0, 3.0, 7.0], n),  # codes with gaps
                rng.poisson(1.0 + moved, n).astype(float),  # many ties
                1.0 + (rng.random(n) < 0.3 + moved),  # a boolean: two categories, Yates' correction
                np.where(rng.random(n) < 0.02 * (1 + 10 * moved), 0.0, 1.0),  # out of vocabulary, more once moved
                np.round(rng.lognormal(3.0 + moved, 1.0, n), 0)])

        x_ref, x = sample(rows_ref, 0.0), sample(rows, shift)
        categorical = {j: None for j, kind in enumerate(kinds) if kind == "categorical"}
        alibi = TabularDrift(x_ref, p_val=0.05, categories_per_feature=categorical).predict(x, drift_type="feature")
        p_values, distances = column_p_values(kinds, x_ref, x)
        np.testing.assert_allclose(p_values, alibi["data"]["p_val"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(distances, alibi["data"]["distance"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kinds, ref_rows, rows, message", [
    (["numeric"], 10, 10, "1 kinds for matrices of 2"),
    (["numeric", "ordinal"], 10, 10, "unknown column kinds"),
    (["numeric", "numeric"], 10, 0, "rows on both sides")])
def test_malformed_calls_are_refused(kinds, ref_rows, rows, message):
    with pytest.raises(ValueError, match=message):
        column_p_values(kinds, np.zeros((ref_rows, 2)), np.zeros((rows, 2)))
