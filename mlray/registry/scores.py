"""One number per prediction, as the inference log keeps it and the drift monitor compares it: the binary score,
the top-class probability, or the regression prediction. Plain Python, so serving imports it without torch."""

from __future__ import annotations

import numpy as np
import pandas as pd


def score_of(prediction: dict) -> float | None:
    """One number for one row of `predict_frame`'s output: the binary score, the top-class probability, or the
    regression prediction (what the inference log's `score` column holds)."""
    if "score" in prediction:
        return float(prediction["score"])
    probabilities = [v for k, v in prediction.items() if str(k).startswith("probability_")]
    if probabilities:
        return float(max(probabilities))
    value = prediction.get("prediction")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def probabilities_of(prediction: dict) -> list[float] | None:
    """A multiclass row's class probabilities, in the package's class order (as `predict_arrays` names them); None
    for a binary or regression row."""
    found = [float(v) for k, v in prediction.items() if str(k).startswith("probability_")]
    return found or None


def scores(frame: pd.DataFrame) -> np.ndarray:
    """`score_of` for every row of `predict_frame`'s output."""
    return np.array([score_of(row) for row in frame.to_dict("records")], dtype=float)
