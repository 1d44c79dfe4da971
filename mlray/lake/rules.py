"""Row-level expectations of a table, checked the same way at ingestion and in `mlray validate`.

`check_rows` turns a raw batch into typed columns plus a list of violations; each violation
is a mask over the rows and knows how to say, per row, what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from mlray.lake.schema import ARROW_TYPES, TYPE_NAMES, arrow_schema, as_text, parse_column
from mlray.spec import ColumnSpec, TableSpec


@dataclass(frozen=True)
class Violation:
    """Rows of one column that break one rule (mask True = broken)."""

    column: str
    rule: str  # 'type', 'not_null', 'min', 'max', 'allowed'
    expected: str  # what the rule asks for, in words
    mask: pa.BooleanArray
    values: pa.Array  # the raw values (any type), shown as text in messages and examples

    @property
    def count(self) -> int:
        return int(pc.sum(self.mask).as_py() or 0)

    def messages(self) -> pa.Array:
        """'amount: -3 is below min 0' where the row breaks the rule, null elsewhere."""
        if self.rule == "not_null":
            text = pa.scalar(f"{self.column}: {self.expected}")
        else:
            shown = pc.fill_null(pc.binary_join_element_wise("'", as_text(self.values), "'", ""), "null")
            text = pc.binary_join_element_wise(f"{self.column}: ", shown, f" {self.expected}", "")
        return pc.if_else(self.mask, text, pa.scalar(None, pa.string()))

    def examples(self, limit: int = 3) -> list[str]:
        picked = as_text(pc.filter(self.values, self.mask).slice(0, limit))
        return [v if v is not None else "null" for v in picked.to_pylist()]


def _rule_checks(name: str, col: ColumnSpec, typed: pa.Array, raw: pa.Array, parsed_ok: pa.Array) -> list[Violation]:
    found = []
    present = pc.and_(pc.is_valid(typed), parsed_ok)
    if not col.nullable:
        missing = pc.and_(pc.is_null(typed), parsed_ok)
        found.append(Violation(name, "not_null", "missing value (the column is not nullable)", missing, raw))
    if col.min is not None:
        below = pc.and_(present, pc.fill_null(pc.less(typed, col.min), False))
        found.append(Violation(name, "min", f"is below min {col.min:g}", below, raw))
    if col.max is not None:
        above = pc.and_(present, pc.fill_null(pc.greater(typed, col.max), False))
        found.append(Violation(name, "max", f"is above max {col.max:g}", above, raw))
    if col.allowed is not None:
        allowed = pa.array(col.allowed, ARROW_TYPES[col.type])
        outside = pc.and_(present, pc.invert(pc.fill_null(pc.is_in(typed, allowed), False)))
        found.append(Violation(name, "allowed", "is not an allowed value", outside, raw))
    return found


def check_rows(raw: pa.Table, table: TableSpec) -> tuple[pa.Table, list[Violation]]:
    """Parse every declared column of `raw` into its type and check the row rules.

    `raw` must carry every declared column (any Arrow type; text is parsed)."""
    columns, violations = {}, []
    for name, col in table.columns.items():
        values = raw.column(name).combine_chunks() if isinstance(raw.column(name), pa.ChunkedArray) else raw.column(name)
        typed, failed = parse_column(values, col.type)
        if col.type != "string":
            violations.append(Violation(name, "type", f"is not {TYPE_NAMES[col.type]}", failed, values))
        violations.extend(_rule_checks(name, col, typed, values, pc.invert(failed)))
        columns[name] = typed
    typed_table = pa.Table.from_pydict(columns, schema=arrow_schema(table).remove_metadata())
    return typed_table, [v for v in violations if v.count]


def row_reasons(violations: list[Violation], num_rows: int) -> pa.Array:
    """One '; '-joined reason per row (null for a good row)."""
    reasons = pa.nulls(num_rows, pa.string())
    for violation in violations:
        message = violation.messages()
        reasons = pc.coalesce(pc.binary_join_element_wise(reasons, message, "; "), reasons, message)
    return reasons


def bad_rows_mask(violations: list[Violation], num_rows: int) -> pa.BooleanArray:
    mask = pa.array([False] * num_rows)
    for violation in violations:
        mask = pc.or_(mask, violation.mask)
    return mask
