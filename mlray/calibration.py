"""A classifier's calibration and binary decision threshold, both fitted on the validation split; the calibrator goes
into the model package as JSON (`Calibrator.to_dict`) and the drift monitor applies it later, without scikit-learn.

Calibration: Platt scaling (a logistic regression on the score's logit) and isotonic regression are both fitted and
compared with leaving the scores alone, on the expected calibration error of cross-fitted scores: the rows fall into
FOLDS stratified folds, each fold's scores are mapped by a fit on the other folds, and the ECE is measured once over
all those out-of-fold scores (in-sample, isotonic regression would always win); that is done REPEATS times, on other
fold assignments, and averaged. From the simplest (identity, Platt, isotonic), a more flexible method is chosen only
when it cuts the best error so far by more than MARGIN: on a few hundred rows the two fits' errors are mostly noise,
and isotonic regression's steps then overfit. The chosen one is refitted on every row. Multiclass: vector scaling
(Guo et al. 2017; with a bias per class it is Alexandari et al.'s bias-corrected temperature scaling: probabilities =
softmax(temperature · log(scores) + bias), fitted by maximum likelihood) comes after identity; then one Platt or
isotonic map per class, one-vs-rest, the rows renormalised to sum to 1. The multiclass error is the classwise ECE
(each class's probability against whether the row is of that class, averaged over the classes; Kull et al. 2019):
the top-class ECE cannot see a rare class whose probabilities are off, which is what an estimate of macro metrics
or of class shares reads. Fewer than MIN_ROWS rows, or fewer than two classes with FOLDS rows each: identity.

Threshold (binary): 'f1' maximises F1; {precision: p} takes the lowest threshold with precision ≥ p (the most recall
that precision allows), raised past any negatives just above it (same recall, more precision); {recall: r} the highest
threshold with recall ≥ r. The value returned lies halfway between the highest validation score it rejects and the
lowest it accepts, so it cuts the validation split as chosen, with a margin either side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_softmax, logit, softmax
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve
from sklearn.model_selection import StratifiedKFold

from mlray.errors import UserError
from mlray.quality import expected_calibration_error

FOLDS = 5
REPEATS = 3  # cross-fittings, on different fold assignments, whose errors are averaged
MARGIN = 0.2  # the relative cut in error a more flexible method must bring (isotonic overfits a few hundred rows)
MIN_ROWS = 30
METHODS = ("identity", "platt", "isotonic")  # simplest first: a tie goes to the earlier
MULTICLASS_METHODS = ("identity", "vector", "platt", "isotonic")
TASKS = ("binary", "multiclass")
EPS = 1e-6  # scores are clipped this far inside (0, 1) before their logit; thresholds stay as far inside
PLATT_C = 100.0  # barely regularised: enough to keep a separable fold's slope finite


@dataclass(frozen=True)
class Platt:
    """Probability = sigmoid(slope · logit(score) + intercept)."""

    slope: float = 1.0
    intercept: float = 0.0

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return expit(self.slope * logit(np.clip(scores, EPS, 1 - EPS)) + self.intercept)


@dataclass(frozen=True)
class Isotonic:
    """A non-decreasing step map: probability interpolated between breakpoints, flat beyond the ends."""

    x: tuple[float, ...] = (0.0, 1.0)
    y: tuple[float, ...] = (0.0, 1.0)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(scores, self.x, self.y)


ColumnMap = Platt | Isotonic


@dataclass(frozen=True)
class VectorScaling:
    """Multiclass: probabilities = softmax(temperature · log(scores) + bias), one bias per class."""

    temperature: float = 1.0
    bias: tuple[float, ...] = ()

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return softmax(self.temperature * np.log(np.clip(scores, EPS, 1.0)) + np.asarray(self.bias), axis=1)


@dataclass(frozen=True)
class Calibrator:
    """Scores → calibrated probabilities, with nothing but floats inside (it travels as JSON)."""

    task: str  # binary: one map, of P(class 1); multiclass: one map per class column
    method: str  # identity | platt | isotonic | vector (multiclass)
    columns: tuple[ColumnMap, ...] = ()  # empty for identity and vector
    ece_before: float = 0.0  # of the raw validation scores
    ece_after: float = 0.0  # of the cross-fitted calibrated scores (identity: the raw ones)
    vector: VectorScaling | None = None  # the vector method's map

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Scores (binary: (n,), multiclass: (n, k)) → calibrated probabilities of the same shape, in [0, 1]."""
        raw = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
        if self.task == "binary":
            return np.clip(self.columns[0](raw), 0.0, 1.0) if self.columns else raw
        classes = len(self.vector.bias) if self.vector else len(self.columns)
        if classes and raw.shape[-1] != classes:
            raise ValueError(f"the calibrator maps {classes} classes, the scores have {raw.shape[-1]}")
        if self.vector:
            return self.vector(raw)
        mapped = np.column_stack([m(raw[:, j]) for j, m in enumerate(self.columns)]) if self.columns else raw
        return _normalised(np.clip(mapped, 0.0, 1.0), raw)

    def to_dict(self) -> dict:
        vector = {} if self.vector is None else {"temperature": float(self.vector.temperature),
                                                 "bias": [float(b) for b in self.vector.bias]}
        return {"task": self.task, "method": self.method, "ece_before": float(self.ece_before),
                "ece_after": float(self.ece_after), "columns": [_column_dict(m) for m in self.columns]} | vector

    @classmethod
    def from_dict(cls, data: dict) -> Calibrator:
        if not isinstance(data, dict):
            raise UserError(f"a calibration is a mapping, not {type(data).__name__}")
        method, task = data.get("method"), data.get("task")
        if method not in MULTICLASS_METHODS:
            raise UserError(f"calibration method {method!r} is unknown: expected one of {', '.join(MULTICLASS_METHODS)}")
        if task not in TASKS:
            raise UserError(f"calibration task {task!r} is unknown: expected one of {', '.join(TASKS)}")
        try:
            columns = tuple(_column_map(method, c) for c in data.get("columns", []))
            ece_before, ece_after = float(data.get("ece_before", 0.0)), float(data.get("ece_after", 0.0))
            vector = _vector_scaling(data) if method == "vector" else None
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"calibration ({method}) has malformed parameters: {e}") from None
        if method == "vector" and (task != "multiclass" or columns):
            raise UserError(f"a {task} vector calibration cannot have {len(columns)} column maps")
        if method != "vector" and ((method == "identity") != (not columns) or (task == "binary" and len(columns) > 1)):
            raise UserError(f"a {task} {method} calibration cannot have {len(columns)} column maps")
        return cls(task, method, columns, ece_before, ece_after, vector)


def fit_calibrator(task: str, y_true: np.ndarray, scores: np.ndarray, seed: int = 0) -> Calibrator:
    """The calibrator of lowest cross-fitted ECE on these validation labels and scores (see the module docstring)."""
    if task not in TASKS:
        raise ValueError(f"only classifiers are calibrated, not {task!r}")
    y = np.asarray(y_true).astype(np.int64).ravel()
    raw = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    raw = raw[:, None] if raw.ndim == 1 else raw
    if len(raw) != len(y) or (len(y) and (y.min() < 0 or y.max() >= max(raw.shape[1], 2))):
        raise ValueError(f"{len(y)} labels in [0, {max(raw.shape[1], 2)}) expected for scores of shape {raw.shape}")
    truth = y[:, None] if task == "binary" else (y[:, None] == np.arange(raw.shape[1])).astype(np.int64)
    before = _ece(task, y, raw)
    counts = np.bincount(y, minlength=raw.shape[1])
    if len(y) < MIN_ROWS or (counts >= FOLDS).sum() < 2:
        return Calibrator(task, "identity", (), before, before)
    # classes too rare to stratify on join the most common one
    strata = np.where(counts[y] >= FOLDS, y, counts.argmax())
    splits = [list(StratifiedKFold(FOLDS, shuffle=True, random_state=seed + r).split(raw, strata)) for r in range(REPEATS)]
    methods = METHODS if task == "binary" else MULTICLASS_METHODS
    errors = {"identity": before}
    for method in methods[1:]:
        errors[method] = float(np.mean([_ece(task, y, _cross_fitted(method, raw, truth, folds)) for folds in splits]))
    method = _simplest_good_enough(errors, methods)
    if method == "vector":
        return Calibrator(task, method, (), before, errors[method], _fit_vector(raw, y))
    columns = _fit_columns(method, raw, truth) if method != "identity" else ()
    return Calibrator(task, method, columns, before, errors[method])


def _simplest_good_enough(errors: dict[str, float], methods: tuple[str, ...] = METHODS) -> str:
    """Walking from the simplest method, a more flexible one replaces the best so far only when it cuts its error by
    more than MARGIN."""
    chosen = methods[0]
    for method in methods[1:]:
        if errors[method] < (1 - MARGIN) * errors[chosen]:
            chosen = method
    return chosen


@dataclass(frozen=True)
class Threshold:
    """A binary decision threshold, and what it achieved on the validation split."""

    value: float  # predict the positive class when score ≥ value
    rule: str  # 'f1', 'precision ≥ p', 'recall ≥ r' or 'fixed'
    achieved: dict[str, float] = field(default_factory=dict)  # validation precision, recall and F1 at `value`
    reason: str = ""  # why the rule was not applied (no positive or no negative row), else empty


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, rule: str | dict[str, float] | float) -> Threshold:
    """The binary decision threshold `rule` picks on the validation split (see the module docstring); a number is
    kept as given."""
    y = np.asarray(y_true).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    name, target = _parse_rule(rule)
    if name == "fixed":
        return Threshold(target, name, _achieved(y, s, target))
    label = "f1" if name == "f1" else f"{name} ≥ {target:g}"
    positives = int((y == 1).sum())
    if positives in (0, len(y)):
        missing = "positive" if positives == 0 else "negative"
        return Threshold(0.5, label, _achieved(y, s, 0.5), f"the validation split has no {missing} row: threshold 0.5 kept")
    precision, recall, cuts = precision_recall_curve(y, s)
    precision, recall = precision[:-1], recall[:-1]  # the last point (nothing predicted positive) has no threshold
    if name == "f1":
        chosen = int(np.argmax(2 * precision * recall / np.maximum(precision + recall, 1e-12)))
    else:
        reached = precision if name == "precision" else recall
        met = np.flatnonzero(reached >= target)
        if not len(met):
            best = int(np.argmax(reached))
            raise UserError(f"train.threshold asks {name} ≥ {target:g} on the validation split; the best reachable is "
                            f"{reached[best]:.4g} at threshold {_cut(cuts, best):.4g}")
        # precision: the lowest threshold meeting it has the most recall; higher ones that keep that recall only drop
        # negatives. recall: the highest threshold meeting it.
        chosen = int(np.flatnonzero(recall == recall[met[0]])[-1]) if name == "precision" else int(met[-1])
    value = _cut(cuts, chosen)
    return Threshold(value, label, _achieved(y, s, value))


def _parse_rule(rule: str | dict[str, float] | float) -> tuple[str, float]:
    if rule == "f1":
        return "f1", 0.0
    if isinstance(rule, (int, float)) and not isinstance(rule, bool) and 0 < rule < 1:
        return "fixed", float(rule)
    if isinstance(rule, dict) and len(rule) == 1:
        (name, target), = rule.items()
        if name in ("precision", "recall") and isinstance(target, (int, float)) and 0 < target <= 1:
            return name, float(target)
    raise UserError(f"train.threshold {rule!r} is not a rule: expected 'f1', {{precision: p}} or {{recall: r}} with "
                    "p and r in (0, 1], or a number in (0, 1)")


def _cut(cuts: np.ndarray, index: int) -> float:
    """Halfway between the score below the chosen one and the chosen score (the lowest one predicted positive)."""
    below = cuts[index - 1] if index > 0 else 0.0
    return float(np.clip((below + cuts[index]) / 2, EPS, 1 - EPS))


def _achieved(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = scores >= threshold
    hits = int((predicted & (y == 1)).sum())
    precision = hits / predicted.sum() if predicted.any() else 0.0
    recall = hits / (y == 1).sum() if (y == 1).any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def _fit_platt(scores: np.ndarray, truth: np.ndarray) -> Platt:
    if truth.min() == truth.max():
        return Platt()
    model = LogisticRegression(C=PLATT_C, max_iter=1000).fit(logit(np.clip(scores, EPS, 1 - EPS))[:, None], truth)
    return Platt(float(model.coef_[0, 0]), float(model.intercept_[0]))


def _fit_isotonic(scores: np.ndarray, truth: np.ndarray) -> Isotonic:
    if truth.min() == truth.max():
        return Isotonic()
    model = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(scores, truth)
    return Isotonic(tuple(map(float, model.X_thresholds_)), tuple(map(float, model.y_thresholds_)))


FITS = {"platt": _fit_platt, "isotonic": _fit_isotonic}


def _fit_columns(method: str, raw: np.ndarray, truth: np.ndarray) -> tuple[ColumnMap, ...]:
    """One map per score column (a class's one-vs-rest labels; a column whose labels are all alike: identity)."""
    return tuple(FITS[method](raw[:, j], truth[:, j]) for j in range(raw.shape[1]))


def _fit_vector(raw: np.ndarray, y: np.ndarray) -> VectorScaling:
    """The temperature and biases of least cross-entropy on these rows (L-BFGS, from the identity map)."""
    logs, rows = np.log(np.clip(raw, EPS, 1.0)), np.arange(len(y))

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = theta[0] * logs + theta[1:]
        gradient = softmax(z, axis=1)
        gradient[rows, y] -= 1
        return -log_softmax(z, axis=1)[rows, y].mean(), np.r_[(gradient * logs).sum(), gradient.sum(axis=0)] / len(y)

    # a negative temperature would turn the classes' order round: it is bounded at 0
    found = minimize(loss, np.r_[1.0, np.zeros(raw.shape[1])], jac=True, method="L-BFGS-B",
                     bounds=[(0.0, None)] + [(None, None)] * raw.shape[1]).x
    bias = found[1:] - found[1:].mean()  # softmax ignores a common shift: keep the biases centred
    return VectorScaling(float(found[0]), tuple(map(float, bias)))


def _cross_fitted(method: str, raw: np.ndarray, truth: np.ndarray, folds: list) -> np.ndarray:
    """Every row's scores mapped by a fit on the folds it is not in."""
    out = np.empty_like(raw)
    for fitted_on, held in folds:
        if method == "vector":
            out[held] = _fit_vector(raw[fitted_on], truth[fitted_on].argmax(axis=1))(raw[held])
            continue
        maps = _fit_columns(method, raw[fitted_on], truth[fitted_on])
        out[held] = np.column_stack([m(raw[held, j]) for j, m in enumerate(maps)])
    return out


def _ece(task: str, y: np.ndarray, probability: np.ndarray) -> float:
    """Binary: of P(class 1); multiclass: classwise, each class's probability against whether the row is of it,
    averaged over the classes."""
    if task == "binary":
        return expected_calibration_error(y, probability[:, 0])
    p = _normalised(np.clip(probability, 0.0, 1.0), probability)
    return float(np.mean([expected_calibration_error((y == c).astype(np.float64), p[:, c]) for c in range(p.shape[1])]))


def _normalised(probability: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1; a row mapped to all zeros takes its raw scores' proportions (uniform if none)."""
    out = np.full_like(probability, 1.0 / max(probability.shape[1], 1))
    for rows in (np.clip(fallback, 0.0, 1.0), probability):  # the later wins where its row has any mass
        total = rows.sum(axis=1, keepdims=True)
        out = np.where(total > 0, rows / np.maximum(total, 1e-300), out)
    return out


def _column_dict(column: ColumnMap) -> dict:
    if isinstance(column, Platt):
        return {"slope": float(column.slope), "intercept": float(column.intercept)}
    return {"x": [float(v) for v in column.x], "y": [float(v) for v in column.y]}


def _vector_scaling(data: dict) -> VectorScaling:
    temperature, bias = float(data["temperature"]), tuple(float(b) for b in data["bias"])
    if len(bias) < 2 or not np.isfinite([temperature, *bias]).all():
        raise ValueError("vector scaling needs a finite temperature and a finite bias per class, at least two")
    return VectorScaling(temperature, bias)


def _column_map(method: str, data: dict) -> ColumnMap:
    if method == "platt":
        return Platt(float(data["slope"]), float(data["intercept"]))
    x, y = tuple(float(v) for v in data["x"]), tuple(float(v) for v in data["y"])
    if not x or len(x) != len(y) or any(b < a for a, b in zip(x, x[1:])):
        raise ValueError("isotonic breakpoints need as many x as y, at least one, x non-decreasing")
    return Isotonic(x, y)
