"""`mlray validate`: a table's expectations evaluated with Ray Data over a pinned snapshot.

Workers reduce each block to a small partial (failure counts per rule, examples, row count,
newest event time, id hashes); the driver merges them. Row rules are the same `check_rows`
that ingestion quarantines with.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlray.blocks import reduce_blocks
from mlray.lake.io import schema_difference
from mlray.lake.rules import check_rows
from mlray.lake.schema import arrow_schema, stable_hash
from mlray.lake.tables import Lake, arrow_schema_of
from mlray.spec import TableSpec, format_duration

log = logging.getLogger(__name__)
EXAMPLES = 3


@dataclass
class Check:
    name: str  # e.g. 'amount: min'
    expected: str
    passed: bool
    failing: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class ValidationReport:
    table: str
    version: int
    rows: int
    checked_at: str
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def to_dict(self) -> dict:
        return {"table": self.table, "version": self.version, "rows": self.rows, "checked_at": self.checked_at,
                "passed": self.passed, "checks": [asdict(c) for c in self.checks]}

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.table}-v{self.version}.json"
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    def summary(self) -> str:
        if self.passed:
            return f"table '{self.table}' v{self.version} passes all {len(self.checks)} checks"
        names = ", ".join(f"{c.name} ({c.failing} failing)" if c.failing else c.name for c in self.failures)
        return f"table '{self.table}' v{self.version} fails {len(self.failures)} of {len(self.checks)} checks: {names}"


def partial_stats(batch: pa.Table, table: TableSpec) -> dict:
    """One block's failure counts and examples per rule, row count, newest event and id hashes."""
    _, violations = check_rows(batch, table)
    partial = {
        "rows": batch.num_rows,
        "failures": {(v.column, v.rule): (v.count, v.examples(EXAMPLES)) for v in violations},
        "newest": None, "ids": None,
    }
    if table.event_time_column:
        newest = pc.max(batch.column(table.event_time_column)).as_py()
        partial["newest"] = newest
    if table.id_column and table.expectations.unique_id:
        ids = batch.column(table.id_column).combine_chunks().drop_null()
        partial["ids"] = stable_hash(ids)
    return partial


def _rows_with_hash(batch: pa.Table, column: str, hashes: np.ndarray) -> pa.Table:
    ids = batch.column(column).combine_chunks().drop_null()
    return pa.table({column: ids.filter(pa.array(np.isin(stable_hash(ids), hashes)))})


def _duplicate_ids(lake: Lake, name: str, version: int, table: TableSpec, hashes: list[np.ndarray]) -> tuple[int, list]:
    """Ids seen more than once: hashes find candidates, an exact look settles them."""
    every = np.concatenate(hashes) if hashes else np.array([], np.uint64)
    every.sort()
    repeated = np.unique(every[1:][every[1:] == every[:-1]])
    if not len(repeated):
        return 0, []
    matches = lake.dataset(name, version, columns=[table.id_column]).map_batches(
        _rows_with_hash, fn_kwargs={"column": table.id_column, "hashes": repeated}, batch_format="pyarrow")
    candidates = pa.concat_tables(matches.iter_batches(batch_format="pyarrow")).column(table.id_column)
    counts = pc.value_counts(candidates)
    dupes = counts.filter(pc.greater(counts.field("counts"), 1))
    extra = int(pc.sum(pc.subtract(dupes.field("counts"), 1)).as_py() or 0)
    return extra, [str(v) for v in dupes.field("values").to_pylist()[:EXAMPLES]]


def _rule_checks(table: TableSpec, failures: dict) -> list[Check]:
    checks = []
    for name, col in table.columns.items():
        # types are settled by the schema check: a Delta column cannot hold a value of another type
        rules = (["not_null"] if not col.nullable else []) + (["min"] if col.min is not None else []) + \
                 (["max"] if col.max is not None else []) + (["allowed"] if col.allowed is not None else [])
        expected = {"not_null": "no missing values", "min": f"≥ {col.min:g}" if col.min is not None else "",
                    "max": f"≤ {col.max:g}" if col.max is not None else "",
                    "allowed": f"one of {', '.join(map(str, col.allowed or []))}"}
        for rule in rules:
            count, examples = failures.get((name, rule), (0, []))
            checks.append(Check(f"{name}: {rule}", expected[rule], count == 0, count, examples))
    return checks


def validate(lake: Lake, name: str, table: TableSpec, version: int | None = None,
             now: datetime | None = None) -> ValidationReport:
    """Evaluate every expectation of `table` on one pinned version of Delta table `name`."""
    return validate_and_reduce(lake, name, table, version, now)[0]


def validate_and_reduce(lake: Lake, name: str, table: TableSpec, version: int | None = None,
                        now: datetime | None = None, reducers: dict | None = None,
                        dataset=None) -> tuple[ValidationReport, dict]:
    """`validate`, with other per-block `reducers` riding on the same pass over the table's columns.

    `dataset` may be the snapshot already opened with `lake.dataset(name, version)`, so that a
    caller reading it again later pays for opening it once. Returns the report and the other
    reducers' partials (none when the schema check fails)."""
    dt = lake.open(name, version)
    version = dt.version()
    difference = schema_difference(arrow_schema(table), arrow_schema_of(dt))
    checks = [Check("schema", "the declared columns and types", difference is None, 0, [difference] if difference else [])]
    if difference:  # row rules cannot run on columns that are not there
        return ValidationReport(name, version, dt.count(), _now(now).isoformat(), checks), {}

    dataset = (dataset or lake.dataset(name, version)).select_columns(list(table.columns))
    partials = reduce_blocks(dataset, {"validation": (partial_stats, {"table": table}), **(reducers or {})})
    rows, failures, newest, hashes = 0, {}, None, []
    for partial in partials.pop("validation"):
        rows += partial["rows"]
        for key, (count, examples) in partial["failures"].items():
            total, seen = failures.get(key, (0, []))
            failures[key] = (total + count, (seen + examples)[:EXAMPLES])
        if partial["newest"] is not None:
            newest = partial["newest"] if newest is None else max(newest, partial["newest"])
        if partial["ids"] is not None:
            hashes.append(partial["ids"])

    checks += _rule_checks(table, failures)
    expect = table.expectations
    checks.append(Check("rows", f"at least {expect.min_rows}", rows >= expect.min_rows, 0, [str(rows)]))
    if table.id_column and expect.unique_id:
        extra, examples = _duplicate_ids(lake, name, version, table, hashes)
        checks.append(Check(f"{table.id_column}: unique", "no id appears twice", extra == 0, extra, examples))
    if table.event_time_column and expect.max_staleness is not None:
        checks.append(_freshness(table.event_time_column, newest, expect.max_staleness, _now(now)))
    return ValidationReport(name, version, rows, _now(now).isoformat(), checks), partials


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(timezone.utc)


def _freshness(column: str, newest, max_staleness, now: datetime) -> Check:
    if isinstance(newest, datetime) and newest.tzinfo is None:
        newest = newest.replace(tzinfo=timezone.utc)
    elif newest is not None and not isinstance(newest, datetime):  # a date column
        newest = datetime(newest.year, newest.month, newest.day, tzinfo=timezone.utc)
    fresh = newest is not None and now - newest <= max_staleness
    shown = [newest.isoformat()] if newest else ["no events"]
    return Check(f"{column}: fresh", f"newest event within {format_duration(max_staleness)}", fresh, 0 if fresh else 1, shown)
