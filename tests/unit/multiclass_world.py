"""A three-class model's world for the monitor's multiclass tests: generated rows and a champion fitted on them."""

from functools import cache
from types import SimpleNamespace

import numpy as np

from mlray.calibration import fit_calibrator


def multiclass_rows(count: int, priors: list[float], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, raw class probabilities) of a three-class model: each class's latent centred on its own axis, the
    probabilities the softmax of a too-confident (unscaled) read of it."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, count, p=priors)
    latent = rng.normal(np.eye(3)[y] * 1.5, 1.0)
    exp = np.exp(2.5 * latent)
    return y, exp / exp.sum(axis=1, keepdims=True)


@cache
def multiclass_champion() -> SimpleNamespace:
    y, probabilities = multiclass_rows(20_000, [0.6, 0.3, 0.1], seed=0)
    confusion = np.zeros((3, 3), dtype=np.int64)
    np.add.at(confusion, (probabilities.argmax(axis=1), y), 1)
    return SimpleNamespace(task="multiclass", classes=["a", "b", "c"], threshold=0.5, confusion=confusion,
                           calibrator=fit_calibrator("multiclass", y, probabilities), probabilities=None)
