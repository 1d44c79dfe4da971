"""The promotion gate: minimum metrics, and no worse than the champion on the same holdout."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mlray.spec import GateSpec

# The metric each task is judged by, and whether higher is better.
MAIN_METRIC = {"binary": ("roc_auc", True), "multiclass": ("macro_f1", True), "regression": ("rmse", False)}
LOWER_IS_BETTER = {"rmse", "mae", "ece"}


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons) or ("passed" if self.passed else "rejected")


def decide(task: str, metrics: dict[str, float], gate: GateSpec, champion: dict[str, float] | None) -> GateDecision:
    """Pass only if every floor and ceiling holds and the champion (if any) is not beaten by more than tolerance."""
    failures, notes = [], []
    for name, floor in gate.min_metrics.items():
        value = metrics.get(name)
        if value is None or math.isnan(value) or value < floor:
            failures.append(f"{name} {value} is below the minimum {floor}")
    for name, ceiling in gate.max_metrics.items():
        value = metrics.get(name)
        if value is None or math.isnan(value) or value > ceiling:
            failures.append(f"{name} {value} is above the maximum {ceiling}")
    if champion is not None:
        name = gate.metric or MAIN_METRIC[task][0]
        higher = name not in LOWER_IS_BETTER if gate.metric else MAIN_METRIC[task][1]
        new, old = metrics.get(name), champion.get(name)
        if new is None or old is None:
            failures.append(f"{name} is missing, so the champion cannot be compared")
        else:
            worse_by = (old - new) if higher else (new - old)
            line = f"{name} {new:.4f} vs the champion's {old:.4f} on the same holdout (tolerance {gate.tolerance})"
            (failures if worse_by > gate.tolerance else notes).append(line)
    return GateDecision(not failures, failures or notes)
