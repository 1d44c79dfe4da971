"""Request and response bodies, generated from the data schema: the same columns and types the lake holds.

A value the lake cannot hold is refused here, with a 422 naming the field: an integer beyond int64, a NaN, an
infinity or a float literal that overflows (1e400), a string longer than `serve.max_string_length`."""

from datetime import date, datetime
from typing import Any, Optional

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from mlray.lake.inference import inputs_type
from mlray.serve.request_ids import REQUEST_ID_PATTERN
from mlray.spec import ColumnSpec, ProjectSpec, TableSpec

PYTHON_TYPES = {"int": int, "float": float, "string": str, "bool": bool, "timestamp": datetime, "date": date}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def request_columns(spec: ProjectSpec) -> tuple[list[str], set[str]]:
    """What a request row may carry (every column of the train table) and what it must (the features' inputs): the
    id is optional (echoed back when given, to join feedback on), and so is the label."""
    return list(spec.train_table.columns), {feature.source for feature in spec.features}


def value_constraints(column: ColumnSpec, max_string_length: int) -> dict:
    """pydantic constraints that keep a value within what the lake's column type holds, and within the spec's range."""
    if column.type == "int":
        low = INT64_MIN if column.min is None else max(INT64_MIN, column.min)
        high = INT64_MAX if column.max is None else min(INT64_MAX, column.max)
        return {"ge": low, "le": high}
    if column.type == "float":
        bounds = {k: v for k, v in (("ge", column.min), ("le", column.max)) if v is not None}
        return {"allow_inf_nan": False, **bounds}
    if column.type == "string":
        return {"max_length": max_string_length}
    return {}


def row_model(table: TableSpec, columns: list[str], required: set[str] | None = None,
              name: str = "Row", max_string_length: int = 1000) -> type[BaseModel]:
    """A pydantic model of one raw row: `columns` typed as declared; unknown keys refused. A column may be left out
    when it is nullable or not `required` (default: every column is; the model's inputs are, an id or a label is not)."""
    fields: dict[str, Any] = {}
    for column in columns:
        spec = table.columns[column]
        kind = PYTHON_TYPES[spec.type]
        constraints = value_constraints(spec, max_string_length)
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


def feedback_model(spec: ProjectSpec) -> type[BaseModel]:
    """`{"request_id", "row", "label"}`: an id as the service issued it, a row within the request's limit, and a label
    of the label column's type (or any JSON scalar when the spec names no label column)."""
    label_column = spec.data.label_column
    if label_column is None:
        label: tuple = (Any, Field(description="the true label of the request's row"))
    else:
        column = spec.train_table.columns[label_column]
        label = (PYTHON_TYPES[column.type], Field(description=f"the true '{label_column}' of the request's row",
                                                  **value_constraints(column, spec.serve.max_string_length)))
    return create_model(
        "Feedback", __config__=ConfigDict(extra="forbid"),
        request_id=(str, Field(pattern=REQUEST_ID_PATTERN, max_length=64,
                               description="the request_id the prediction answered with")),
        row=(int, Field(0, ge=0, lt=spec.serve.max_rows_per_request, description="which row of the request")),
        label=label,
    )


def label_text(label: Any) -> str:
    """A validated label as the labels table keeps it: text that casts back to the label column's type."""
    if isinstance(label, bool):
        return "true" if label else "false"
    if isinstance(label, (datetime, date)):
        return label.isoformat()
    return str(label)


def request_schema(table: TableSpec, columns: list[str]) -> pa.Schema:
    """The request columns with the lake's types: validated rows become Arrow with it, so the transform sees what
    training saw."""
    return pa.schema(list(inputs_type(table, columns)))  # the inference log's `inputs` struct, as a schema


def rows_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Validated rows (dicts) as Arrow with `request_schema`'s types."""
    return pa.Table.from_pylist(rows, schema=schema)
