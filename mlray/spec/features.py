"""`features`: declared once, fitted on data, applied identically in training and serving."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from mlray.spec.base import NAME_PATTERN, Section


class FeatureBase(Section):
    name: str = Field(pattern=NAME_PATTERN)
    column: str | None = Field(None, description="source column (default: the feature's name)")

    @property
    def source(self) -> str:
        return self.column or self.name


class Bucketize(Section):
    boundaries: list[float] | None = Field(None, min_length=1)
    quantiles: int | None = Field(None, ge=2, le=1000)

    @model_validator(mode="after")
    def _one_of(self) -> "Bucketize":
        if (self.boundaries is None) == (self.quantiles is None):
            raise ValueError("give exactly one of boundaries (a list) or quantiles (a number of buckets)")
        if self.boundaries is not None and self.boundaries != sorted(set(self.boundaries)):
            raise ValueError("boundaries must be strictly increasing")
        return self


class NumericFeature(FeatureBase):
    """clip → log1p → standardize (a float output) or bucketize (a bucket index output)."""

    kind: Literal["numeric"]
    clip: tuple[float | None, float | None] | None = None
    log1p: bool = False
    standardize: bool = True
    bucketize: Bucketize | None = None
    default: float | Literal["mean", "median"] | None = Field(None, description="fills missing values")


class CategoricalFeature(FeatureBase):
    """Vocabulary fitted from the data; index 0 is the out-of-vocabulary bucket."""

    kind: Literal["categorical"]
    top_k: int | None = Field(None, ge=1, description="keep the k most frequent values")
    min_count: int = Field(1, ge=1)
    default: str | int | None = Field(None, description="stands in for a missing value (then looked up as usual)")


class BooleanFeature(FeatureBase):
    kind: Literal["boolean"]
    default: bool | None = None


TimestampPart = Literal["hour", "weekday", "day", "month"]


class TimestampFeature(FeatureBase):
    """Calendar parts (UTC) of a timestamp, each a categorical index."""

    kind: Literal["timestamp"]
    parts: list[TimestampPart] = Field(default_factory=lambda: ["hour", "weekday"], min_length=1)


Feature = Annotated[
    Union[NumericFeature, CategoricalFeature, BooleanFeature, TimestampFeature], Field(discriminator="kind")
]

FEATURE_COLUMN_TYPES = {
    "numeric": ("int", "float", "bool"),
    "categorical": ("string", "int", "bool"),
    "boolean": ("bool",),
    "timestamp": ("timestamp", "date"),
}
