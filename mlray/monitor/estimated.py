"""A window's quality and class priors as the champion's own scores tell them, before its labels arrive.

The package's calibrator turns the champion's served scores into probabilities; CBPE (`estimators.estimate_binary`)
estimates the confusion matrix and the metrics at the package's threshold, each with a 90% interval, and BBSE
(`estimators.estimate_priors`) the class priors from the window's predicted classes against the validation split's
confusion. A prior whose interval leaves the training prior's is a label shift. Binary models only for now: the
inference log keeps a multiclass model's top probability, not the whole distribution CBPE needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlray.monitor.estimators import estimate_binary, estimate_priors, prior_shifted, source_priors
from mlray.monitor.reference import Reference


@dataclass
class WindowEstimates:
    quality: dict[str, dict] = field(default_factory=dict)  # metric → {value, low, high}
    priors: dict[str, dict] = field(default_factory=dict)  # class → {value, low, high}
    prior_shift: list[str] = field(default_factory=list)  # classes whose prior left the training prior's interval

    def drop(self, metric: str, offline: dict[str, float]) -> float | None:
        """How far the estimate fell below the offline test metric, counted only when its whole interval lies
        below it (else 0); None when there is nothing to compare."""
        estimate, before = self.quality.get(metric), offline.get(metric)
        if estimate is None or before is None or not np.isfinite(estimate["value"]):
            return None
        return max(0.0, before - estimate["value"]) if estimate["high"] < before else 0.0


def estimate_window(reference: Reference, scores: np.ndarray, seed: int = 0) -> WindowEstimates:
    """The estimates of a window of the champion's served scores (empty for a model without a calibrator, or a task
    other than binary)."""
    if reference.task != "binary" or reference.calibrator is None or len(scores) == 0:
        return WindowEstimates()
    probability = reference.calibrator.apply(scores)
    found = estimate_binary(probability, scores, reference.threshold, seed=seed)
    out = WindowEstimates({name: e.to_dict() for name, e in found.items() if name not in ("tp", "fp", "fn", "tn")})
    if reference.confusion is not None:
        predicted = np.array([(scores < reference.threshold).sum(), (scores >= reference.threshold).sum()])
        priors = estimate_priors(reference.confusion, predicted, seed=seed)
        names = [str(c) for c in reference.classes]
        out.priors = {name: p.to_dict() for name, p in zip(names, priors)}
        out.prior_shift = [names[j] for j in prior_shifted(source_priors(reference.confusion), priors)
                           if j == 1]  # binary: the negative class's share is the complement
    return out
