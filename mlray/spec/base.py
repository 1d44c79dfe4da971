"""What every section of the spec shares: the base model, names, column types and durations."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

ENV_PREFIX = "MLRAY_"
DEFAULT_SPEC_FILE = "mlray.yaml"
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

ColumnType = Literal["int", "float", "string", "bool", "timestamp", "date"]
NUMERIC_TYPES = ("int", "float", "bool")
ORDERED_TYPES = ("int", "float", "timestamp", "date")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_duration(value: Any) -> timedelta:
    """'90s', '15m', '12h', '7d', '2w' or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(value))
    if not match and str(value).startswith("P"):  # ISO 8601, as a dumped spec writes durations ('PT2S')
        try:
            return TypeAdapter(timedelta).validate_python(value)
        except ValidationError:
            pass
    if not match:
        raise ValueError(f"expected a duration such as '30m', '12h' or '7d', got {value!r}")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match[2]]
    return timedelta(**{unit: float(match[1])})


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[timedelta, Field(json_schema_extra={"examples": ["7d"]})]


def _describe(error: dict) -> str:
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown key (check the spelling; see `mlray init` for a full example)"
    if error["type"] == "missing":
        return "required key is missing"
    if error["type"] in ("literal_error", "enum") and "input" in error:
        return f"{message}, got {error['input']!r}"
    return message
