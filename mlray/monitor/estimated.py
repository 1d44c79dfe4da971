"""A window's quality and class priors as the champion's own scores tell them, before its labels arrive; and, once
labels arrive, whether they bear the estimator out.

The package's calibrator turns the champion's served scores into probabilities; CBPE (`estimators.estimate_binary`)
estimates the confusion matrix and the metrics at the package's threshold, each with a 90% interval, and BBSE
(`estimators.estimate_priors`) the class priors from the window's predicted classes. What a prior is compared with:
- without a seasonal match, the validation split's class shares: a prior whose interval leaves the validation share's
  is a label shift. A window of night hours, when fraud is likelier at night, looks shifted that way;
- with the reference rows matched to the window's hours (`matched_reference_scores`), BBSE on those rows' predicted
  classes, with the same validation confusion: a class has moved when the bootstrap interval of the difference of the
  two estimates (`estimators.prior_difference`, SHIFT_ALPHA = 0.2% two-sided, so that calm windows stay well under
  1% flagged) excludes 0. Its power rests on the matched rows: from a 1,000-row reference sample three night hours
  match some 40 rows, and an interval that wide flags nothing.

`check_assumptions`: on the last labelled rows, CBPE's estimate from their scores against the metrics their labels
give. Under CBPE's assumption (calibrated probabilities, p(y|x) unchanged) the realised values of the m = 5 metrics
all stay inside their bands together with probability 1 - FAMILY_ALPHA (`estimators.assumption_bands`: joint bands
from the same draws, narrower than Bonferroni's), so a window that bears the assumption out is flagged at most
FAMILY_ALPHA of the time, whichever metric; a metric outside its band means the estimator is outside
its assumptions: concept drift (or a label shift, which moves p(y|x) too: the prior check tells the two apart).
With a 90% band per metric, over a quarter of calm windows would have one of the five outside.

Multiclass models are estimated from the class probabilities the inference log keeps (`probabilities`): accuracy and
macro precision, recall and ROC-AUC, and BBSE over every class, each class's share tested at SHIFT_ALPHA with no
correction over the classes (k classes: up to k × 0.2% of calm windows report a moved share). Their labels check
the assumptions as a binary model's do, on the four multiclass metrics, from the probabilities each labelled row was
served with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlray.monitor.estimators import (
    Estimate,
    assumption_bands,
    estimate_binary,
    estimate_multiclass,
    estimate_priors,
    moved,
    multiclass_assumption_bands,
    outside_assumptions,
    prior_difference,
    prior_shifted,
    realised_binary,
    realised_multiclass,
    source_priors,
)
from mlray.monitor.reference import Reference

MIN_CLASS_LABELS = 20  # labels of each class a check of the assumptions needs


@dataclass
class WindowEstimates:
    quality: dict[str, dict] = field(default_factory=dict)  # metric → {value, low, high}
    priors: dict[str, dict] = field(default_factory=dict)  # class → {value, low, high}
    prior_shift: list[str] = field(default_factory=list)  # classes whose prior moved from the source's
    prior_source: str = ""  # what the priors were compared with: 'matched' (the window's hours) or 'validation'
    source_priors: dict[str, dict] = field(default_factory=dict)  # class → {value, low, high} of that source
    prior_difference: dict[str, dict] = field(default_factory=dict)  # matched: class → window minus source, tested

    def drop(self, metric: str, offline: dict[str, float]) -> float | None:
        """How far the estimate fell below the offline test metric, counted only when its whole interval lies
        below it (else 0); None when there is nothing to compare."""
        estimate, before = self.quality.get(metric), offline.get(metric)
        if estimate is None or before is None or not np.isfinite(estimate["value"]):
            return None
        return max(0.0, before - estimate["value"]) if estimate["high"] < before else 0.0


def estimate_window(reference: Reference, scores: np.ndarray, seed: int = 0,
                    matched_reference_scores: np.ndarray | None = None,
                    window_rows: np.ndarray | None = None, probabilities: np.ndarray | None = None,
                    matched_reference_probabilities: np.ndarray | None = None) -> WindowEstimates:
    """The estimates of a window of the champion's served scores (binary), or of its class probabilities
    (`probabilities`, rows × classes, multiclass); empty for a model without a calibrator, a regression, or a
    multiclass window without probabilities. With `matched_reference_scores` (multiclass:
    `matched_reference_probabilities`), the reference rows matched to the window's periods, the priors are judged
    against those rows, on the window's rows in `window_rows` (a boolean mask over the window's rows: the rows the
    match kept; default all); without, against the validation split."""
    predicted = _window_calls(reference, scores, probabilities, seed)
    if predicted is None:
        return WindowEstimates()
    out, calls = predicted
    if reference.confusion is None:
        return out
    names = [str(c) for c in reference.classes]
    priors = estimate_priors(reference.confusion, _counts(calls, len(names)), seed=seed)
    out.priors = {name: p.to_dict() for name, p in zip(names, priors)}
    matched = matched_reference_scores if reference.task == "binary" else matched_reference_probabilities
    if matched is None:
        out.prior_source, judged = "validation", _against_validation(reference.confusion, priors)
    else:
        kept = calls if window_rows is None else calls[np.asarray(window_rows, bool)]
        out.prior_source = "matched"
        judged = _against_matched(reference.confusion, kept, _calls(reference, np.asarray(matched, float)), seed)
    if judged is not None:  # None: nothing matched, the shares cannot be judged
        source, shifted, difference = judged
        out.source_priors = {name: p.to_dict() for name, p in zip(names, source)}
        out.prior_difference = {name: d.to_dict() for name, d in zip(names, difference)}
        # binary: the negative class's share is the complement of the positive's, which alone is reported
        out.prior_shift = [names[j] for j in shifted if j == 1 or reference.task != "binary"]
    return out


def _window_calls(reference: Reference, scores: np.ndarray, probabilities: np.ndarray | None,
                  seed: int) -> tuple[WindowEstimates, np.ndarray] | None:
    """CBPE's estimates of the window and each row's predicted class index (None: nothing to estimate)."""
    if reference.calibrator is None or len(scores) == 0:
        return None
    if reference.task == "binary":
        scores = np.asarray(scores, float)
        found = estimate_binary(reference.calibrator.apply(scores), scores, reference.threshold, seed=seed)
    elif reference.task == "multiclass" and probabilities is not None and len(probabilities) and \
            probabilities.shape[1] == len(reference.classes) and np.isfinite(probabilities).all():
        found = estimate_multiclass(reference.calibrator.apply(probabilities), seed=seed, scores=probabilities)
    else:
        return None
    quality = {name: e.to_dict() for name, e in found.items() if name not in ("tp", "fp", "fn", "tn")}
    return WindowEstimates(quality), _calls(reference, scores if reference.task == "binary" else probabilities)


def logged_probabilities(rows: pa.Table) -> np.ndarray | None:
    """The class probabilities of inference-log rows (rows × classes); None when a row lacks them (logged before the
    log kept them, or not a multiclass answer) or there are none."""
    kept = rows.column("probabilities") if "probabilities" in rows.column_names else None
    if kept is None or not len(kept) or kept.null_count:
        return None
    lengths = pc.list_value_length(kept)
    if pc.min(lengths).as_py() != pc.max(lengths).as_py():  # answers of packages with other classes
        return None
    return np.array(kept.to_pylist(), dtype=float)


def _against_validation(confusion: np.ndarray, priors: list[Estimate]) -> tuple[list, list[int], list]:
    """The validation split's class shares, the classes whose prior interval left theirs, and no difference."""
    source = source_priors(confusion)
    return source, prior_shifted(source, priors), []


def _against_matched(confusion: np.ndarray, window_calls: np.ndarray,
                     matched_calls: np.ndarray, seed: int) -> tuple[list, list[int], list] | None:
    """The matched rows' BBSE priors, the classes whose difference from them is significant, and the differences;
    None when either side has no rows."""
    if not len(window_calls) or not len(matched_calls):
        return None
    k = len(confusion)
    window, source = _counts(window_calls, k), _counts(matched_calls, k)
    difference = prior_difference(confusion, window, source, seed=seed)
    return estimate_priors(confusion, source, seed=seed), moved(difference), difference


def _calls(reference: Reference, scores: np.ndarray) -> np.ndarray:
    """Each row's predicted class index: binary scores against the threshold, multiclass probabilities' argmax."""
    if reference.task == "binary":
        return (scores >= reference.threshold).astype(np.int64)
    scores = np.asarray(scores, float)
    return scores.argmax(axis=1) if len(scores) else np.zeros(0, dtype=np.int64)


def _counts(calls: np.ndarray, classes: int) -> np.ndarray:
    """How many rows are predicted each class."""
    return np.bincount(calls, minlength=classes)[:classes]


@dataclass
class AssumptionCheck:
    """Whether labelled rows bear CBPE's estimate out: per metric, the estimate from their scores, its band and the
    value their labels give; `outside` names the metrics whose realised value left the band."""

    judged: bool = False
    reason: str = ""  # why the rows were not judged
    rows: int = 0  # labelled rows with a known class and a score
    positives: int = 0  # binary: labels of the positive class
    level: float = 0.0  # each band's coverage under the assumption (all together: 1 - FAMILY_ALPHA)
    metrics: dict[str, dict] = field(default_factory=dict)  # metric → {estimated, low, high, realised}
    outside: list[str] = field(default_factory=list)  # the estimator is outside its assumptions: concept drift
    per_class: dict[str, int] = field(default_factory=dict)  # multiclass: labels of each class

    @property
    def concept_drift(self) -> bool:
        return bool(self.outside)

    def to_dict(self) -> dict:
        return asdict(self)


def check_assumptions(reference: Reference, labelled: list[tuple[str, object]], seed: int = 0,
                      min_class_labels: int = MIN_CLASS_LABELS) -> AssumptionCheck:
    """CBPE's estimate on labelled rows against the metrics their labels give (see the module docstring): (label
    text, served score) pairs of a binary model, (label text, served class probabilities) of a multiclass one. Not
    judged: another task, no calibrator, or fewer than `min_class_labels` labels of either class (multiclass: of two
    classes at least; the bands come from the same draws whatever each class's count). Labels are matched to the
    classes as text, case aside; others, and rows without a score (or without one probability per class), are left
    out."""
    if reference.task not in ("binary", "multiclass"):
        return AssumptionCheck(reason=f"a {reference.task} model has no estimate to check")
    if reference.calibrator is None:
        return AssumptionCheck(reason="the model has no calibrator: nothing was estimated")
    if reference.task == "multiclass":
        return _check_multiclass(reference, labelled, seed, min_class_labels)
    labels, scores = _known(reference.classes, labelled)
    positives = int(labels.sum())
    if min(positives, len(labels) - positives) < min_class_labels:
        return AssumptionCheck(reason=f"fewer than {min_class_labels} labels of a class", rows=len(labels),
                               positives=positives)
    bands, level = assumption_bands(reference.calibrator.apply(scores), scores, reference.threshold, seed=seed)
    return _judged(bands, level, realised_binary(labels, scores, reference.threshold), len(labels), positives=positives)


def _check_multiclass(reference: Reference, labelled: list[tuple[str, object]], seed: int,
                      min_class_labels: int) -> AssumptionCheck:
    labels, probabilities = _known_classes(reference.classes, labelled)
    per_class = dict(zip(map(str, reference.classes), np.bincount(labels, minlength=len(reference.classes)).tolist()))
    if labelled and not len(labels):
        return AssumptionCheck(reason="no labelled row carries the class probabilities it was served with")
    if sorted(per_class.values())[-2] < min_class_labels:
        return AssumptionCheck(reason=f"fewer than two classes with {min_class_labels} labels", rows=len(labels),
                               per_class=per_class)
    bands, level = multiclass_assumption_bands(reference.calibrator.apply(probabilities), probabilities, seed=seed)
    return _judged(bands, level, realised_multiclass(labels, probabilities), len(labels), per_class=per_class)


def _judged(bands: dict[str, Estimate], level: float, realised: dict[str, float], rows: int,
            **counts) -> AssumptionCheck:
    """A judged check: each band with the realised value, and the metrics outside their band."""
    metrics = {name: {"estimated": band.value, "low": band.low, "high": band.high, "realised": realised[name]}
               for name, band in bands.items()}
    return AssumptionCheck(True, "", rows, level=level, metrics=metrics, outside=outside_assumptions(bands, realised),
                           **counts)


def _known(classes: list, labelled: list[tuple[str, float | None]]) -> tuple[np.ndarray, np.ndarray]:
    """(0/1 labels, scores) of the pairs whose label names a class and whose score is a number."""
    negative, positive = (str(c).lower() for c in classes)
    known = [(str(label).lower() == positive, float(score)) for label, score in labelled
             if str(label).lower() in (negative, positive) and score is not None and np.isfinite(score)]
    return np.array([y for y, _ in known], dtype=np.int64), np.array([s for _, s in known], float)


def _known_classes(classes: list, labelled: list[tuple[str, list | None]]) -> tuple[np.ndarray, np.ndarray]:
    """(class indices, probabilities (n, k)) of the pairs whose label names a class and whose probabilities are one
    finite distribution over the classes."""
    index, k = {str(c).lower(): j for j, c in enumerate(classes)}, len(classes)
    known = [(index[str(label).lower()], np.asarray(p, float)) for label, p in labelled
             if str(label).lower() in index and p is not None and len(p) == k]
    known = [(y, p) for y, p in known if np.isfinite(p).all() and (p >= 0).all() and abs(p.sum() - 1) <= 1e-3]
    return np.array([y for y, _ in known], dtype=np.int64), np.array([p for _, p in known], float).reshape(-1, k)
