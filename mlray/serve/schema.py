"""Request and response bodies, generated from the data schema: the same columns and types the lake holds."""

from datetime import date, datetime
from typing import Any, Optional

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from mlray.lake.inference import inputs_type
from mlray.spec import ProjectSpec, TableSpec

PYTHON_TYPES = {"int": int, "float": float, "string": str, "bool": bool, "timestamp": datetime, "date": date}


def request_columns(spec: ProjectSpec) -> tuple[list[str], set[str]]:
    """What a request row may carry (every column of the train table) and what it must (the features' inputs): the
    id is optional (echoed back when given, to join feedback on), and so is the label."""
    return list(spec.train_table.columns), {feature.source for feature in spec.features}


def row_model(table: TableSpec, columns: list[str], required: set[str] | None = None,
              name: str = "Row") -> type[BaseModel]:
    """A pydantic model of one raw row: `columns` typed as declared; unknown keys refused. A column may be left out
    when it is nullable or not `required` (default: every column is; the model's inputs are, an id or a label is not)."""
    fields: dict[str, Any] = {}
    for column in columns:
        spec = table.columns[column]
        kind = PYTHON_TYPES[spec.type]
        constraints = {k: v for k, v in (("ge", spec.min), ("le", spec.max)) if v is not None}
        if spec.nullable or (required is not None and column not in required):
            fields[column] = (Optional[kind], Field(None, **constraints))
        else:
            fields[column] = (kind, Field(..., **constraints))
    return create_model(name, __config__=ConfigDict(extra="forbid", strict=False), **fields)


def request_model(row_type: type[BaseModel], max_rows: int) -> type[BaseModel]:
    """`{"rows": [row, ...]}` or `{"row": row}`."""

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        rows: Optional[list[row_type]] = Field(None, min_length=1, max_length=max_rows)  # type: ignore[valid-type]
        row: Optional[row_type] = None  # type: ignore[valid-type]

        @model_validator(mode="after")
        def _one_of(self):
            if (self.rows is None) == (self.row is None):
                raise ValueError("send either 'row' (one row) or 'rows' (a list of rows)")
            return self

        def all_rows(self) -> list[dict]:
            chosen = self.rows if self.rows is not None else [self.row]
            return [r.model_dump() for r in chosen]

    return PredictRequest


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=128)
    label: Any = Field(description="the true label of the request's row (its first row for a batch)")
    row: int = Field(0, ge=0, description="which row of the request this label is for")


def request_schema(table: TableSpec, columns: list[str]) -> pa.Schema:
    """The request columns with the lake's types: validated rows become Arrow with it, so the transform sees what
    training saw."""
    return pa.schema(list(inputs_type(table, columns)))  # the inference log's `inputs` struct, as a schema


def rows_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Validated rows (dicts) as Arrow with `request_schema`'s types."""
    return pa.Table.from_pylist(rows, schema=schema)
