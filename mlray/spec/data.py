"""`data`: the tables, their columns and expectations."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from mlray.errors import UserError
from mlray.spec.base import NAME_PATTERN, ColumnType, Duration, Section, parse_duration


class ColumnSpec(Section):
    """One column: its type and the row-level expectations every ingested row must meet."""

    type: ColumnType
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str | int] | None = Field(None, min_length=1)
    description: str | None = None

    @model_validator(mode="after")
    def _check_rules_fit_type(self) -> "ColumnSpec":
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError(f"min/max apply to int and float columns, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.allowed is not None and self.type not in ("string", "int"):
            raise ValueError(f"allowed values apply to string and int columns, not {self.type}")
        return self


class Expectations(Section):
    """Table-level expectations checked by `mlray validate` on a pinned snapshot."""

    min_rows: int = Field(1, ge=0)
    unique_id: bool = True
    max_staleness: Duration | None = Field(None, description="newest event time must be younger than this")

    _parse_staleness = field_validator("max_staleness", mode="before")(
        lambda v: None if v is None else parse_duration(v)
    )


def _column_shorthand(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


class TableSpec(Section):
    columns: dict[Annotated[str, Field(pattern=NAME_PATTERN)], ColumnSpec] = Field(min_length=1)
    id_column: str | None = None
    event_time_column: str | None = None
    expectations: Expectations = Field(default_factory=Expectations)

    @field_validator("columns", mode="before")
    @classmethod
    def _allow_type_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {name: _column_shorthand(col) for name, col in value.items()}
        return value

    @model_validator(mode="after")
    def _check_key_columns(self) -> "TableSpec":
        for role in ("id_column", "event_time_column"):
            name = getattr(self, role)
            if name is not None and name not in self.columns:
                raise ValueError(f"{role} '{name}' is not among the columns ({', '.join(self.columns)})")
        if self.event_time_column and self.columns[self.event_time_column].type not in ("timestamp", "date"):
            raise ValueError(f"event_time_column '{self.event_time_column}' must be a timestamp or date column")
        return self


class DataSpec(Section):
    tables: dict[Annotated[str, Field(pattern=NAME_PATTERN)], TableSpec] = Field(min_length=1)
    train_table: str | None = Field(None, description="the table models learn from (default: the only table)")
    label_column: str | None = None

    @model_validator(mode="after")
    def _check_train_table(self) -> "DataSpec":
        if self.train_table is None:
            if len(self.tables) > 1:
                raise ValueError(f"train_table is required when several tables are declared ({', '.join(self.tables)})")
            object.__setattr__(self, "train_table", next(iter(self.tables)))
        elif self.train_table not in self.tables:
            raise ValueError(f"train_table '{self.train_table}' is not among the tables ({', '.join(self.tables)})")
        if self.label_column is not None and self.label_column not in self.tables[self.train_table].columns:
            raise ValueError(
                f"label_column '{self.label_column}' is not a column of table '{self.train_table}'"
                f" ({', '.join(self.tables[self.train_table].columns)})"
            )
        return self

    def table(self, name: str) -> TableSpec:
        if name not in self.tables:
            raise UserError(f"table '{name}' is not declared in the spec's data.tables ({', '.join(self.tables)})")
        return self.tables[name]
