"""`model` and `train`: the network, training, the split and the promotion gate."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mlray.spec.base import Section

Task = Literal["auto", "binary", "multiclass", "regression"]


class ModelSpec(Section):
    """The tabular network: embeddings for categorical inputs, an MLP body, a head per task."""

    task: Task = Field("auto", description="auto: bool or two-valued label → binary, other int/string → multiclass, "
                                            "float → regression")
    hidden: list[int] = Field(default_factory=lambda: [64, 64], min_length=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    embedding_dim: int | None = Field(None, ge=1, le=256, description="default: min(16, 1.6·cardinality^0.56)")
    batch_norm: bool = False


class EarlyStopping(Section):
    patience: int = Field(3, ge=1, description="epochs without improvement of val_loss before stopping")
    min_delta: float = Field(0.0, ge=0)


class SplitSpec(Section):
    """Rows go to a split by a hash of their id: the same row, the same split, in every run and version."""

    validation: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> "SplitSpec":
        if self.validation + self.test >= 0.9:
            raise ValueError("validation + test must leave at least 10% of rows for training")
        return self


class GateSpec(Section):
    """Promotion gate: a new version becomes challenger only if it passes these."""

    min_metrics: dict[str, float] = Field(default_factory=dict, description="e.g. {roc_auc: 0.75}")
    max_metrics: dict[str, float] = Field(default_factory=dict, description="e.g. {rmse: 12.5}")
    metric: str | None = Field(None, description="compared with the champion (default: the task's main metric)")
    tolerance: float = Field(0.01, ge=0, description="how much worse than the champion it may be")


class ThresholdTarget(Section):
    """A binary decision threshold chosen on the validation split to meet a precision or a recall."""

    precision: float | None = Field(None, gt=0, lt=1, description="the lowest threshold with at least this precision")
    recall: float | None = Field(None, gt=0, lt=1, description="the highest threshold with at least this recall")

    @model_validator(mode="after")
    def _one_target(self) -> "ThresholdTarget":
        if (self.precision is None) == (self.recall is None):
            raise ValueError("name exactly one of precision or recall")
        return self

    def rule(self) -> dict[str, float]:
        return {"precision": self.precision} if self.precision is not None else {"recall": self.recall}


class TrainSpec(Section):
    execution: Literal["auto", "local", "ray"] = Field(
        "auto", description="ray: Ray Train workers (restarts from a checkpoint after a crash, resumes a run submitted "
                            "again under its name); local: Ray Train's local mode in the calling process, no workers "
                            "to start; auto: local up to 100,000 training rows without a GPU, else ray")
    num_workers: int = Field(2, ge=1)
    use_gpu: bool | Literal["auto"] = "auto"
    cpus_per_worker: float = Field(1.0, gt=0)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(512, ge=1)
    cache_inputs: bool = Field(True, description="keep the transformed inputs in Ray's object store after the first "
                                                 "pass instead of re-reading Delta every epoch (off: data larger than "
                                                 "the object store)")
    shard_in_memory_mb: float = Field(1024, ge=0, description="a worker whose shard of training and validation inputs "
                                                               "takes at most this many MB reads it once into tensors "
                                                               "and shuffles row indices every epoch; a larger shard "
                                                               "streams from Ray Data every epoch (0: always stream)")
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    precision: Literal["auto", "32", "16-mixed", "bf16-mixed"] = "auto"
    early_stopping: EarlyStopping | None = Field(default_factory=EarlyStopping)
    checkpoints_to_keep: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0, description="worker failures survived by resuming from the last checkpoint")
    split: SplitSpec = Field(default_factory=SplitSpec)
    threshold: float | Literal["auto"] | ThresholdTarget = Field(
        "auto", description="binary decision threshold: auto (the one maximising F1 on the validation split), "
                            "{precision: p} or {recall: r} (met on the validation split), or a number in (0, 1)")
    slices: list[str] = Field(default_factory=list, description="columns to report metrics per value of")
    gate: GateSpec = Field(default_factory=GateSpec)
    seed: int = 0

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, value: Any) -> Any:
        """A mapping is a target (its own errors, not the number's); a number lies strictly between 0 and 1."""
        if isinstance(value, dict):
            return ThresholdTarget.model_validate(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not 0 < value < 1:
            raise ValueError(f"threshold must lie strictly between 0 and 1, not {value:g}")
        return value

    def threshold_rule(self) -> float | str | dict[str, float]:
        """What picks the binary threshold: a fixed number, 'f1' (auto), or a precision/recall target."""
        if isinstance(self.threshold, ThresholdTarget):
            return self.threshold.rule()
        return "f1" if self.threshold == "auto" else self.threshold
