"""A realistic card-transaction generator with knobs for covariate, prior and concept shift.

Used by the demo, the tests and the benchmarks; nothing in mlray's core depends on it.
The columns match `mlray/templates/starter.yaml`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

CATEGORIES = np.array(["grocery", "restaurants", "gas", "online_retail", "electronics", "travel",
                       "entertainment", "health", "jewelry", "gaming"])
CATEGORY_WEIGHTS = np.array([0.24, 0.18, 0.12, 0.14, 0.06, 0.05, 0.08, 0.07, 0.02, 0.04])
RISKY_CATEGORIES = {"electronics", "jewelry", "gaming", "online_retail"}
COUNTRIES = np.array(["US", "GB", "DE", "FR", "ES", "IT", "NL", "CA", "BR", "MX", "IN", "NG", "RU", "CN", "JP", "AU"])
COUNTRY_WEIGHTS = np.array([0.40, 0.10, 0.09, 0.08, 0.05, 0.04, 0.03, 0.05, 0.03, 0.03, 0.03, 0.01, 0.01, 0.02, 0.02, 0.01])
RISKY_COUNTRIES = {"NG", "RU", "BR", "MX"}
DEVICES = np.array(["pos", "mobile", "desktop", "atm"])
CATEGORY_AMOUNT = {"grocery": 3.6, "restaurants": 3.4, "gas": 3.7, "online_retail": 4.0, "electronics": 5.3,
                   "travel": 5.8, "entertainment": 3.5, "health": 4.1, "jewelry": 6.0, "gaming": 3.3}


@dataclass(frozen=True)
class Shift:
    """How far the world has moved from the reference (0 = none, 1 = a lot)."""

    covariate: float = 0.0  # inputs move: bigger amounts, more online and foreign, newer accounts
    prior: float = 0.0  # fraud is drawn (1 + 4·prior) times as often; what fraud looks like stays (label shift)
    concept: float = 0.0  # the same inputs mean something else: fraud moves to small, daytime, domestic payments


def _pick(rng: np.random.Generator, values: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    return values[rng.choice(len(values), size=size, p=weights / weights.sum())]


def _customers(rng: np.random.Generator, count: int, shift: Shift) -> dict[str, np.ndarray]:
    return {
        "home": _pick(rng, COUNTRIES, COUNTRY_WEIGHTS, count),
        "age": np.clip(rng.normal(43 - 8 * shift.covariate, 15, count), 18, 95).astype(np.int64),
        "account_age": rng.gamma(2.0, 500 * (1 - 0.6 * shift.covariate), count).astype(np.int64),
        "activity": rng.gamma(1.5, 1.0, count),
    }


def generate_transactions(rows: int, seed: int = 0, start: datetime | None = None, days: float = 30,
                          shift: Shift = Shift(), id_prefix: str | None = None) -> pa.Table:
    """`rows` transactions spread over `days` ending at `start + days`, reproducible from `seed`."""
    if shift.prior <= 0:
        return _transactions(rows, seed, start, days, shift, id_prefix)
    # Prior shift: draw from a larger world without it, fraud weighted up, so P(fraud) rises and P(inputs | fraud) stays.
    boost = 1 + 4 * shift.prior
    pool = _transactions(int(rows * boost * 1.3) + 100, seed, start, days, replace(shift, prior=0.0), id_prefix)
    weights = np.where(pool.column("is_fraud").to_numpy(zero_copy_only=False), boost, 1.0)
    chosen = np.random.default_rng(seed + 1).choice(pool.num_rows, size=rows, replace=False, p=weights / weights.sum())
    return pool.take(np.sort(chosen))


def _transactions(rows: int, seed: int, start: datetime | None, days: float, shift: Shift,
                  id_prefix: str | None) -> pa.Table:
    rng = np.random.default_rng(seed)
    if start is None:  # midnight UTC, so that the hours of day below are the hours of the timestamps
        start = (datetime.now(timezone.utc) - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    people = _customers(rng, max(2000, rows // 5), shift)  # many: a window of traffic is mostly distinct customers
    who = rng.integers(0, len(people["home"]), rows)

    seconds = np.sort(rng.uniform(0, days * 86400, rows))
    hour_bias = rng.normal(14, 4.5, rows) % 24  # people pay in daytime, mostly
    day_start = (seconds // 86400) * 86400
    seconds = day_start + hour_bias * 3600
    event_us = (start.timestamp() * 1e6 + seconds * 1e6).astype(np.int64)
    hour = (event_us // 3_600_000_000) % 24  # the UTC hour each timestamp shows (fraud depends on it)

    weights = CATEGORY_WEIGHTS.copy()
    weights[[3, 4, 9]] *= 1 + 2 * shift.covariate
    category = _pick(rng, CATEGORIES, weights, rows)
    abroad = rng.random(rows) < 0.06 + 0.15 * shift.covariate
    country = np.where(abroad, _pick(rng, COUNTRIES, np.ones(len(COUNTRIES)), rows), people["home"][who])
    online = np.isin(category, ["online_retail", "gaming"]) | (rng.random(rows) < 0.1 + 0.2 * shift.covariate)
    device = np.where(online, np.where(rng.random(rows) < 0.6, "mobile", "desktop"),
                      np.where(rng.random(rows) < 0.95, "pos", "atm"))
    mu = np.vectorize(CATEGORY_AMOUNT.get)(category) + 0.5 * shift.covariate
    amount = np.round(np.exp(rng.normal(mu, 0.9)), 2)
    tx_1h = rng.poisson(0.3 * people["activity"][who] * (1 + shift.covariate))
    tx_24h = tx_1h + rng.poisson(2.5 * people["activity"][who])

    risky_category = np.isin(category, list(RISKY_CATEGORIES))
    foreign = country != people["home"][who]
    night = hour < 6
    z_amount = (np.log1p(amount) - 4.0) / 1.1
    account_age = people["account_age"][who]
    old_pattern = (1.1 * z_amount + 1.3 * night + 1.2 * foreign + 0.9 * risky_category + 0.8 * (tx_1h >= 3)
                   + 0.7 * (account_age < 60) - 0.6 * (device == "pos"))
    new_pattern = -1.0 * z_amount + 1.0 * (~night) + 1.4 * (category == "gaming") + 1.0 * (device == "desktop")
    logit = -5.0 + (1 - shift.concept) * old_pattern + shift.concept * new_pattern
    is_fraud = rng.random(rows) < 1 / (1 + np.exp(-logit))

    prefix = id_prefix or f"tx{seed}"
    return pa.table({
        "transaction_id": pa.array([f"{prefix}-{i:09d}" for i in range(rows)], pa.string()),
        "event_time": pa.array(event_us, pa.timestamp("us", tz="UTC")),
        "customer_id": pa.array([f"c{c:07d}" for c in who], pa.string()),
        "amount": pa.array(amount, pa.float64()),
        "merchant_category": pa.array(category, pa.string()),
        "country": pa.array(country, pa.string()),
        "device": pa.array(device, pa.string()),
        "card_present": pa.array(device == "pos", pa.bool_()),
        "customer_age": pa.array(people["age"][who], pa.int64()),
        "account_age_days": pa.array(account_age, pa.int64()),
        "tx_count_1h": pa.array(tx_1h, pa.int64()),
        "tx_count_24h": pa.array(tx_24h, pa.int64()),
        "is_fraud": pa.array(is_fraud, pa.bool_()),
    })


def corrupt(table: pa.Table, fraction: float, seed: int = 0) -> pa.Table:
    """The same rows as text, with a `fraction` made malformed the way real exports are."""
    rng = np.random.default_rng(seed)
    text = {name: table.column(name).cast(pa.string()).to_pylist() for name in table.column_names}
    if "event_time" in text:
        text["event_time"] = [v.replace(" ", "T") if v else v for v in text["event_time"]]
    breakers = [("amount", lambda v: "n/a"), ("amount", lambda v: f"-{v}"), ("customer_age", lambda v: "7"),
                ("merchant_category", lambda v: "casino"), ("transaction_id", lambda v: None),
                ("event_time", lambda v: "yesterday")]
    for row in np.flatnonzero(rng.random(table.num_rows) < fraction):
        column, breaker = breakers[rng.integers(len(breakers))]
        if column in text:
            text[column][row] = breaker(text[column][row])
    return pa.table({name: pa.array(values, pa.string()) for name, values in text.items()})


def write_source_file(table: pa.Table, path) -> None:
    """Write rows the way upstream systems drop them: CSV, Parquet or JSON lines, by the file's suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        pacsv.write_csv(table, path)
    elif suffix in (".parquet", ".pq"):
        pq.write_table(table, path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        with path.open("w") as handle:
            for row in table.to_pylist():
                handle.write(json.dumps(row, default=str) + "\n")
    else:
        raise ValueError(f"unsupported file type {suffix!r}: use .csv, .parquet or .jsonl")
