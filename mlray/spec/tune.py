"""`tune`: a Ray Tune sweep and its search space."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from mlray.spec.base import Section, _describe
from mlray.spec.train import ModelSpec, TrainSpec

SEARCH_KINDS = ("uniform", "loguniform", "int", "choice")
TUNABLE_SECTIONS = {"model": ModelSpec, "train": TrainSpec}
UNTUNABLE = {"train.gate", "train.split", "train.early_stopping", "train.slices", "train.num_workers", "train.use_gpu",
             "train.cpus_per_worker", "train.max_failures", "train.checkpoints_to_keep", "train.epochs", "train.cache_inputs",
             "train.shard_in_memory_mb", "train.execution",
             "train.threshold", "train.precision", "model.task"}  # resources, evaluation and run control


class AshaSpec(Section):
    """ASHA early stopping: trials are compared at epoch grace_period·reduction_factor^k; the worse ones stop."""

    grace_period: int = Field(1, ge=1, description="epochs every trial trains before it can be stopped")
    reduction_factor: float = Field(2.0, gt=1)


def _search_dimension(key: str, spec: Any) -> tuple[str, Any]:
    """Check one search-space entry, {kind: args}; return (kind, args) or raise a one-line ValueError."""
    section, _, field = key.partition(".")
    owner = TUNABLE_SECTIONS.get(section)
    if owner is None or field not in owner.model_fields or key in UNTUNABLE:
        tunable = sorted(f"{s}.{f}" for s, m in TUNABLE_SECTIONS.items() for f in m.model_fields
                         if f"{s}.{f}" not in UNTUNABLE)
        raise ValueError(f"'{key}' cannot be tuned; tunable keys: {', '.join(tunable)}")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SEARCH_KINDS:
        raise ValueError(f"'{key}': expected one of {{{'|'.join(SEARCH_KINDS)}: ...}}, got {spec!r}")
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ValueError(f"'{key}': choice needs a non-empty list of values, got {args!r}")
        candidates = args
    else:
        numbers = isinstance(args, list) and len(args) == 2 and all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
        if not numbers or not args[0] < args[1] or (kind == "loguniform" and args[0] <= 0) or (
                kind == "int" and not all(isinstance(a, int) for a in args)):
            shape = {"uniform": "low < high", "loguniform": "0 < low < high", "int": "integers low < high"}[kind]
            raise ValueError(f"'{key}': {kind} needs [low, high] with {shape}, got {args!r}")
        candidates = args
    for value in candidates:  # every bound or choice must be a valid value of the field itself
        try:
            owner.model_validate({field: value})
        except ValidationError as exc:
            raise ValueError(f"'{key}': {value!r} is not a valid {key}: {_describe(exc.errors()[0])}") from None
    return kind, args


class TuneSpec(Section):
    """`mlray tune`: a Ray Tune sweep of Ray Train runs. Trials are ranked by validation loss (lower is better)."""

    space: dict[str, Any] = Field(
        default_factory=dict, description="key → {uniform|loguniform|int|choice: ...}, keys like train.learning_rate")
    trials: int = Field(8, ge=1, description="configurations sampled (with algorithm: grid, per grid point)")
    algorithm: Literal["random", "grid"] = Field("random", description="grid: every choice is tried; others sampled")
    max_concurrent: int | None = Field(None, ge=1, description="default: as many trials as the cluster's CPUs/GPUs fit")
    scheduler: AshaSpec | None = Field(default_factory=AshaSpec, description="null: every trial runs every epoch")

    @field_validator("space")
    @classmethod
    def _check_space(cls, space: dict[str, Any]) -> dict[str, Any]:
        for key, value in space.items():
            _search_dimension(key, value)
        return space

    def dimensions(self) -> dict[str, tuple[str, Any]]:
        return {key: _search_dimension(key, value) for key, value in self.space.items()}
