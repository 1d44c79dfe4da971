"""The whole-window drift tests in plain SciPy (`monitor.detectors: scipy`), answering as Alibi Detect's detectors do,
so `Detectors` takes either. For a deployment that cannot take alibi-detect's licence (BSL 1.1) or its numpy < 2 pin:
the per-column tests are `column_tests`' (Kolmogorov–Smirnov and chi-squared, TabularDrift's p-values), the score test
a two-sample KS on one column. The multivariate MMD test has no SciPy twin: it needs `detectors: alibi`.
"""

from __future__ import annotations

import numpy as np

from mlray.monitor.column_tests import column_p_values


class ColumnDrift:
    """Per-column tests of a window against `x_ref`, as `TabularDrift.predict(x, drift_type="feature")` reports them."""

    def __init__(self, x_ref: np.ndarray, kinds: list[str]):
        self.x_ref, self.kinds = x_ref, kinds

    def predict(self, x: np.ndarray, drift_type: str = "feature") -> dict:
        if drift_type != "feature":
            raise ValueError(f"only feature-level answers are computed, not {drift_type!r}")
        p_values, distances = column_p_values(self.kinds, self.x_ref, x)
        return {"data": {"p_val": p_values, "distance": distances}}


class ScoreDrift:
    """A two-sample KS test of a window's scores against `scores_ref` at `p_value`, as `KSDrift.predict` reports it."""

    def __init__(self, scores_ref: np.ndarray, p_value: float):
        self.scores_ref, self.p_value = np.asarray(scores_ref, float).reshape(-1, 1), p_value

    def predict(self, scores: np.ndarray) -> dict:
        p_values, distances = column_p_values(["numeric"], self.scores_ref, np.asarray(scores, float).reshape(-1, 1))
        return {"data": {"p_val": p_values, "distance": distances, "is_drift": bool(p_values[0] < self.p_value)}}
