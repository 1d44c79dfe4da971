"""Two-sample tests per column of encoded matrices, as Alibi Detect's `TabularDrift` runs them, without building a
detector: for slices of a window against slices of the reference, many times per window.

Numeric columns: Kolmogorov–Smirnov, two-sided, with the asymptotic p-value (Alibi's mode='asymp'), all columns at
once. Categorical columns (integer codes): chi-squared test of the 2 × k contingency table over the k categories
either side holds, with Yates' correction when k = 2 (scipy's `chi2_contingency`); one category: p = 1. Distances are
the KS statistic and the chi-squared statistic, as Alibi reports them.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2, kstwo

KINDS = ("numeric", "categorical")


def column_p_values(kinds: list[str], x_ref: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p-values, distances), one per column of the (rows × columns) matrices, `kinds[j]` naming column j's test."""
    x_ref, x = _matrix(x_ref), _matrix(x)
    if len(kinds) != x_ref.shape[1] or x.shape[1] != x_ref.shape[1]:
        raise ValueError(f"{len(kinds)} kinds for matrices of {x_ref.shape[1]} and {x.shape[1]} columns")
    if unknown := set(kinds) - set(KINDS):
        raise ValueError(f"unknown column kinds {sorted(unknown)}: expected {' or '.join(KINDS)}")
    if not len(x_ref) or not len(x):
        raise ValueError("a two-sample test needs rows on both sides")
    p_values, distances = np.ones(len(kinds)), np.zeros(len(kinds))
    numeric = np.array([k == "numeric" for k in kinds], dtype=bool)
    if numeric.any():
        p_values[numeric], distances[numeric] = ks_columns(x_ref[:, numeric], x[:, numeric])
    for j in np.flatnonzero(~numeric):
        p_values[j], distances[j] = chi_squared_column(x_ref[:, j], x[:, j])
    return p_values, distances


def ks_columns(x_ref: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided two-sample KS per column: (asymptotic p-values, statistics), as `scipy.stats.ks_2samp`."""
    n_ref, n = len(x_ref), len(x)
    both = np.vstack([x_ref, x])
    order = np.argsort(both, axis=0, kind="stable")
    ranked = np.take_along_axis(both, order, axis=0)
    from_ref = order < n_ref
    gap = np.cumsum(from_ref, axis=0) / n_ref - np.cumsum(~from_ref, axis=0) / n
    last_of_tie = np.vstack([ranked[1:] != ranked[:-1], np.ones((1, both.shape[1]), bool)])  # the ECDFs step here
    statistic = np.where(last_of_tie, np.abs(gap), 0.0).max(axis=0)
    effective = n_ref * n / (n_ref + n)
    return np.clip(kstwo.sf(statistic, np.round(effective)), 0.0, 1.0), statistic


def chi_squared_column(ref: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Chi-squared test of homogeneity of two samples of category codes: (p-value, statistic), as
    `scipy.stats.chi2_contingency` on the categories either side holds."""
    categories, codes = np.unique(np.concatenate([ref, values]), return_inverse=True)
    if len(categories) < 2:
        return 1.0, 0.0
    observed = np.stack([np.bincount(codes[: len(ref)], minlength=len(categories)),
                         np.bincount(codes[len(ref):], minlength=len(categories))]).astype(float)
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0, keepdims=True) / observed.sum()
    if len(categories) == 2:  # Yates' continuity correction, never more than the difference itself
        diff = expected - observed
        observed = observed + np.sign(diff) * np.minimum(0.5, np.abs(diff))
    statistic = float(((observed - expected) ** 2 / expected).sum())
    return float(chi2.sf(statistic, len(categories) - 1)), statistic


def _matrix(values: np.ndarray) -> np.ndarray:
    """Rows × columns floats; one column for a vector."""
    values = np.asarray(values, float)
    return values[:, None] if values.ndim == 1 else values
