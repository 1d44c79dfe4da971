"""Seasonality is not drift: a window is compared with reference rows from the same part of the cycle.

Traffic arrives in time order, so a window of an hour's rows holds that hour's customers (night-time payments,
weekend shopping), and a test against the whole training sample flags the hour, not a change of the world. With a
context (`monitor.context`: a timestamp column and a period, the hour of the day by default) the reference is
subsampled, without replacement, to the window's mix of periods: the largest sample in which every period of the
window has its share of rows, each row drawn once (duplicates would make the tests overconfident); a period the
reference holds too few rows of is left out, with its window rows, when that makes the comparison larger (`match`).
Rows of periods the reference never saw cannot be compared: they are left out of the tests and reported, and a window
made mostly of them is reported as such (`unseen_context`), neither drift nor calm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlray.spec import ContextSpec, ProjectSpec

PERIODS = {"hour_of_day": 24, "day_of_week": 7, "hour_of_week": 168}
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
UNSEEN_LIMIT = 0.5  # a window with more of its rows in periods the reference never saw is not judged
NO_TIME = -1  # the period of a row without a timestamp
COUNTED_RANGE = 4096  # window periods spanning at most this many values are counted, not sorted


@dataclass(frozen=True)
class Context:
    column: str
    period: str  # one of PERIODS

    def periods(self, times: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Each row's period of the cycle (UTC, as the features read time), NO_TIME for a missing timestamp."""
        if self.period == "hour_of_day":
            value = pc.hour(times)
        elif self.period == "day_of_week":
            value = pc.day_of_week(times)  # Monday 0
        else:
            value = pc.add(pc.multiply(pc.day_of_week(times), 24), pc.hour(times))
        return pc.fill_null(value, NO_TIME).to_numpy(zero_copy_only=False).astype(np.int64)

    def label(self, period: int) -> str:
        if period == NO_TIME:
            return "no time"
        if self.period == "hour_of_day":
            return f"{period:02d}h"
        if self.period == "day_of_week":
            return WEEKDAYS[period]
        return f"{WEEKDAYS[period // 24]} {period % 24:02d}h"


def context_of(spec: ProjectSpec) -> Context | None:
    """The spec's context: the one it names, none, or (auto) the hour of day of the first timestamp feature whose
    parts include the hour."""
    chosen = spec.monitor.context
    if isinstance(chosen, ContextSpec):
        return Context(chosen.column, chosen.period)
    if chosen == "auto":
        for feature in spec.features:
            if feature.kind == "timestamp" and "hour" in feature.parts:
                return Context(feature.source, "hour_of_day")
    return None


@dataclass(frozen=True)
class Matched:
    """A window matched with the reference: which reference rows it is compared with, which of its rows take part."""

    reference_rows: np.ndarray  # indices into the reference, sorted
    window_rows: np.ndarray  # a mask of the window's rows that take part
    unseen: list[int]  # the window's periods the reference never saw
    unseen_share: float  # of the window's rows
    thin_share: float  # of the window's rows: in periods the reference holds too few rows of (left out for power)

    @property
    def judged(self) -> bool:
        return self.unseen_share <= UNSEEN_LIMIT and bool(self.window_rows.any())


@dataclass(frozen=True)
class PeriodIndex:
    """A reference's periods indexed once, for matching many windows to it: its distinct periods (sorted), how many
    rows each holds and which rows (sorted indices)."""

    periods: np.ndarray  # each reference row's period
    values: np.ndarray
    counts: np.ndarray
    rows: list[np.ndarray]

    @classmethod
    def of(cls, periods: np.ndarray) -> PeriodIndex:
        values, inverse, counts = np.unique(periods, return_inverse=True, return_counts=True)
        grouped = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
        return cls(periods, values, counts, grouped if len(values) else [])


def match(reference_periods: np.ndarray, window_periods: np.ndarray, seed: int = 0) -> Matched:
    """The reference subsampled to the window's mix of periods (see the module's docstring). A period the reference
    holds few rows of would shrink the whole matched sample to its own size, so the scarcest periods are left out
    (their rows too) while that makes the comparison larger: the kept set maximises n·m / (n + m), the effective size
    of a two-sample test of m window rows against n reference rows."""
    return match_indexed(PeriodIndex.of(reference_periods), window_periods, seed)


def match_indexed(reference: PeriodIndex, window_periods: np.ndarray, seed: int = 0) -> Matched:
    """`match` against a reference indexed once (`PeriodIndex.of`)."""
    seen = np.isin(window_periods, reference.values)
    present, present_counts = _distinct(window_periods)
    known = np.isin(present, reference.values)
    unseen = present[~known].tolist()
    unseen_share = float(1 - seen.mean()) if len(window_periods) else 0.0
    wanted, wanted_counts = present[known], present_counts[known]
    if not len(wanted):
        return Matched(np.zeros(0, dtype=np.int64), seen, unseen, unseen_share, 0.0)
    position = np.searchsorted(reference.values, wanted)
    ratio = reference.counts[position] / wanted_counts  # reference rows per window row, by period
    order = np.argsort(ratio)  # scarcest first: dropping the first k keeps order[k:], whose scarcest is order[k]
    window_rows = np.cumsum(wanted_counts[order][::-1])[::-1]  # the window rows kept, per periods dropped
    sizes = np.minimum(len(reference.periods), ratio[order] * window_rows)  # the reference rows matched to them
    dropped = int(np.argmax(window_rows * sizes / (window_rows + sizes)))  # the largest effective size, fewest dropped
    size, kept = sizes[dropped], order[dropped:]
    rng, chosen = np.random.default_rng(seed), np.zeros(len(reference.periods), dtype=bool)
    for at, count in zip(position[kept].tolist(), wanted_counts[kept].tolist()):
        rows = reference.rows[at]
        take = min(len(rows), max(1, int(round(size * count / window_rows[dropped]))))
        chosen[rng.choice(rows, size=take, replace=False)] = True  # periods hold distinct rows: none drawn twice
    taking = np.isin(window_periods, wanted[kept])
    thin_share = float((seen & ~taking).mean())
    return Matched(np.flatnonzero(chosen), taking, unseen, unseen_share, thin_share)


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(values, return_counts=True)`, by counting when the values are integers of a small range (periods)."""
    if not len(values) or not np.issubdtype(values.dtype, np.integer) or \
            int(values.max()) - int(values.min()) > COUNTED_RANGE:
        return np.unique(values, return_counts=True)
    low = values.min()
    counts = np.bincount(values - low)
    present = np.flatnonzero(counts)
    return present + low, counts[present]


def described(context: Context, matched: Matched) -> dict:
    """What a report keeps of the matching."""
    return {"column": context.column, "period": context.period, "reference_rows": int(len(matched.reference_rows)),
            "unseen": [context.label(p) for p in matched.unseen], "unseen_share": round(matched.unseen_share, 4),
            "thin_share": round(matched.thin_share, 4)}
