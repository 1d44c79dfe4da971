"""The whole spec: every section, and the checks that span sections."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, PrivateAttr, model_validator

from mlray.spec.base import Section
from mlray.spec.data import DataSpec, TableSpec
from mlray.spec.features import FEATURE_COLUMN_TYPES, Feature
from mlray.spec.monitor import MonitorSpec
from mlray.spec.platform import PlatformSpec
from mlray.spec.rollout import RolloutSpec
from mlray.spec.serve import ServeSpec
from mlray.spec.train import ModelSpec, TrainSpec
from mlray.spec.tune import TuneSpec


class ProjectSpec(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    platform: PlatformSpec = Field(default_factory=PlatformSpec)
    data: DataSpec
    features: list[Feature] = Field(min_length=1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    tune: TuneSpec = Field(default_factory=TuneSpec)
    serve: ServeSpec = Field(default_factory=ServeSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    monitor: MonitorSpec = Field(default_factory=MonitorSpec)

    _path: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _check_features_against_schema(self) -> "ProjectSpec":
        table = self.data.tables[self.data.train_table]
        seen: set[str] = set()
        for feature in self.features:
            if feature.name in seen:
                raise ValueError(f"feature '{feature.name}' is declared twice")
            seen.add(feature.name)
            column = table.columns.get(feature.source)
            if column is None:
                raise ValueError(
                    f"feature '{feature.name}' reads column '{feature.source}', which table "
                    f"'{self.data.train_table}' does not have"
                )
            if feature.source == self.data.label_column:
                raise ValueError(f"feature '{feature.name}' reads the label column '{feature.source}'")
            accepted = FEATURE_COLUMN_TYPES[feature.kind]
            if column.type not in accepted:
                raise ValueError(
                    f"feature '{feature.name}' is {feature.kind} but column '{feature.source}' is {column.type}"
                    f" (expected {' or '.join(accepted)})"
                )
        self._check_monitor_columns({f.source for f in self.features}, table)
        self._check_monitor_context({f.source for f in self.features}, table)
        return self

    def _check_monitor_context(self, sources: set[str], table: TableSpec) -> None:
        context = self.monitor.context
        if isinstance(context, str):
            return
        if context.column not in sources or table.columns[context.column].type != "timestamp":
            raise ValueError(f"monitor.context.column: '{context.column}' is not a timestamp column a feature reads "
                             f"(the traffic carries only the features' columns)")

    def _check_monitor_columns(self, sources: set[str], table: TableSpec) -> None:
        for column in self.monitor.columns or ():
            if column not in sources:
                raise ValueError(f"monitor.columns: '{column}' is not a feature's column (one of "
                                 f"{', '.join(sorted(sources))})")
            if table.columns[column].type in ("timestamp", "date"):
                raise ValueError(f"monitor.columns: '{column}' is a {table.columns[column].type}: time always moves, so "
                                 "a drift test on it always fires (leave it out)")

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def train_table(self) -> TableSpec:
        return self.data.tables[self.data.train_table]
