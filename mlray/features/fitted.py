"""The fitted feature set: declarations plus the statistics learned from one table version.

Small, JSON-serialisable, and versioned by the hash of its content (definitions and fitted
statistics; not where or when it was fitted), so the same definitions fitted to the same
numbers always carry the same feature version.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from mlray.errors import UserError
from mlray.spec import TimestampPart

PART_CARDINALITY = {"hour": 24, "weekday": 7, "day": 31, "month": 12}


class _Fitted(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    source: str


class FittedNumeric(_Fitted):
    kind: Literal["numeric"] = "numeric"
    clip: tuple[float | None, float | None] | None = None
    log1p: bool = False
    standardize: bool = True
    mean: float  # of the clipped, log1p'd values
    std: float
    boundaries: list[float] | None = None  # set: the output is a bucket index
    fill: float | None = None  # stands in for a missing value, after clip and log1p

    @property
    def cardinality(self) -> int | None:
        return len(self.boundaries) + 1 if self.boundaries is not None else None


class FittedCategorical(_Fitted):
    kind: Literal["categorical"] = "categorical"
    value_type: Literal["string", "int", "bool"]
    vocabulary: list[str | int | bool]  # index i+1; 0 is out-of-vocabulary
    default: str | int | bool | None = None

    @property
    def cardinality(self) -> int:
        return len(self.vocabulary) + 1

    @property
    def default_index(self) -> int:
        """Where a missing value lands: the default's index, or 0 (out of vocabulary)."""
        matches = [i for i, v in enumerate(self.vocabulary) if v == self.default and type(v) is type(self.default)]
        return matches[0] + 1 if matches else 0


class FittedBoolean(_Fitted):
    kind: Literal["boolean"] = "boolean"
    default: bool | None = None


class FittedTimestamp(_Fitted):
    kind: Literal["timestamp"] = "timestamp"
    parts: list[TimestampPart]


FittedFeature = Annotated[
    Union[FittedNumeric, FittedCategorical, FittedBoolean, FittedTimestamp], Field(discriminator="kind")
]


class Lineage(BaseModel):
    """Where the statistics came from; not part of the feature version."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    table: str | None = None
    table_uri: str | None = None
    table_version: int | None = None
    rows: int = 0
    fitted_at: str | None = None


class FittedFeatures(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    features: list[FittedFeature]
    lineage: Lineage = Field(default_factory=Lineage)

    @property
    def version(self) -> str:
        content = json.dumps([f.model_dump(mode="json") for f in self.features], sort_keys=True,
                             separators=(",", ":"))
        return hashlib.sha256(content.encode()).hexdigest()[:16]

    def outputs(self) -> list[tuple[str, str, int | None]]:
        """(name, 'numeric' or 'categorical', cardinality) of every model input column, in order."""
        found = []
        for f in self.features:
            if f.kind == "categorical" or (f.kind == "numeric" and f.boundaries is not None):
                found.append((f.name, "categorical", f.cardinality))
            elif f.kind == "timestamp":
                found.extend((f"{f.name}_{part}", "categorical", PART_CARDINALITY[part]) for part in f.parts)
            else:
                found.append((f.name, "numeric", None))
        return found

    @property
    def numeric_names(self) -> list[str]:
        """Columns of the float32 `numeric` output, in order."""
        return [name for name, kind, _ in self.outputs() if kind == "numeric"]

    @property
    def categorical_names(self) -> list[str]:
        """Columns of the int64 `categorical` output, in order."""
        return [name for name, kind, _ in self.outputs() if kind == "categorical"]

    @property
    def cardinalities(self) -> list[int]:
        """Number of distinct indices of each `categorical` output column (embedding sizes)."""
        return [size for _, kind, size in self.outputs() if kind == "categorical"]

    @property
    def source_columns(self) -> list[str]:
        return list(dict.fromkeys(f.source for f in self.features))

    def to_json(self) -> str:
        return json.dumps({"feature_version": self.version, **self.model_dump(mode="json")}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "FittedFeatures":
        data = json.loads(text)
        stated = data.pop("feature_version", None)
        fitted = cls.model_validate(data)
        if stated is not None and stated != fitted.version:
            raise UserError(f"fitted features claim version {stated} but their content hashes to {fitted.version}")
        return fitted


class FeatureStore:
    """Fitted feature sets on disk, one JSON file per feature version, plus the latest one."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def save(self, fitted: FittedFeatures) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{fitted.version}.json"
        path.write_text(fitted.to_json())
        (self.folder / "LATEST").write_text(fitted.version)
        return path

    def load(self, version: str | None = None) -> FittedFeatures:
        if version is None:
            latest = self.folder / "LATEST"
            if not latest.is_file():
                raise UserError(f"no fitted features in {self.folder} (run `mlray features fit` first)")
            version = latest.read_text().strip()
        path = self.folder / f"{version}.json"
        if not path.is_file():
            known = sorted(p.stem for p in self.folder.glob("*.json"))
            raise UserError(f"feature version {version} not found in {self.folder} (known: {', '.join(known) or 'none'})")
        return FittedFeatures.from_json(path.read_text())
