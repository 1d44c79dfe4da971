"""The audit log: every deploy, weight change, promotion, rollback and key change, one row each, as a hash chain.

Who (the principal: the OS user and host, or the Ray job, as the acting process finds it), through what (the
component), when, why, and the state before and after. It is a Delta table under the lake root (`audit_log`), so it
outlives the node that wrote it and any process of the cluster can append to it. Each entry carries a sequence number
and the hash of the entry before it, and lands in one commit that is a compare-and-swap on the table's version
(a writer that loses the race reads the new head and tries again), with its id as the commit's app transaction: a
retried entry lands once. `mlray.audit_verify` walks the chain. Rows written before the chain (no seq) stay readable.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from mlray.lake import Lake
from mlray.lake.io import conform
from mlray.lake.tables import arrow_schema_of
from mlray.redaction import redact_credentials
from mlray.spec import PlatformSpec

TABLE = "audit_log"
APP_PREFIX = "mlray-audit:"  # + entry id: the commit's app transaction, its version the entry's seq
SEQ_KEY, HASH_KEY = "mlray.audit.seq", "mlray.audit.hash"  # commit metadata: the head, read without a scan
GENESIS = "0" * 64  # the prev_hash of seq 0
APPEND_TRIES = 20
RAY_JOB_CONFIG = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor in a submitted job's driver
CONTENT = ("id", "at", "actor", "principal", "component", "action", "target", "reason", "before", "after")
AUDIT_SCHEMA = pa.schema([
    pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("actor", pa.string(), nullable=False),  # the principal (rows from before the chain: what the caller said)
    pa.field("action", pa.string(), nullable=False),
    pa.field("target", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("before", pa.string()),  # JSON
    pa.field("after", pa.string()),  # JSON
    pa.field("seq", pa.int64()),  # null: written before the chain
    pa.field("prev_hash", pa.string()),
    pa.field("hash", pa.string()),
    pa.field("id", pa.string()),
    pa.field("principal", pa.string()),
    pa.field("component", pa.string()),
])


class AuditConflict(RuntimeError):
    """Other writers kept taking the chain's head: the entry was not written."""


def current_principal() -> str:
    """Who this process acts for, found in its OS or Ray runtime (never a string a user typed)."""
    job = _job_submission_id()
    return f"job:{job}" if job else f"user:{_os_user()}@{socket.gethostname()}"


def default_actor() -> str:
    """The requester a caller names when it passes on who asked: this process's principal."""
    return current_principal()


def _job_submission_id() -> str | None:
    try:
        config = json.loads(os.environ.get(RAY_JOB_CONFIG) or "{}")
    except ValueError:
        return None
    metadata = config.get("metadata") if isinstance(config, dict) else None
    return (metadata or {}).get("job_submission_id") or None


def _os_user() -> str:
    """The user of the process's uid (not $USER, which a caller sets)."""
    try:
        import pwd  # Unix only: no pwd on Windows (the ImportError below)

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):  # no pwd (Windows) or no passwd entry (some containers)
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def new_entry(action: str, target: str, reason: str = "", before: Any = None, after: Any = None,
              component: str | None = None, principal: str | None = None, id: str | None = None) -> dict:
    """An entry's content as its row holds it (before and after as JSON text), not yet chained."""
    who = principal or current_principal()
    return {"id": id or uuid.uuid4().hex, "at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            "actor": who, "principal": who, "component": component or "", "action": action, "target": target,
            "reason": redact_credentials(reason or ""), "before": redact_credentials(json.dumps(before, default=str)),
            "after": redact_credentials(json.dumps(after, default=str))}


def entry_hash(seq: int, prev_hash: str, entry: dict) -> str:
    """SHA-256 (hex) of the canonical JSON of seq, prev_hash and the entry's content."""
    content = {name: entry.get(name) for name in CONTENT} | {"at": _instant(entry.get("at"))}
    text = json.dumps({"seq": seq, "prev_hash": prev_hash, **content}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _instant(at: datetime | str | None) -> str | None:
    if at is None:
        return None
    when = datetime.fromisoformat(at) if isinstance(at, str) else at
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds")


class AuditLog:
    def __init__(self, platform: PlatformSpec):
        self.lake = Lake.from_platform(platform)
        self.evolved = False  # the table exists with the chain's columns

    def append(self, action: str, target: str, reason: str = "", before: Any = None, after: Any = None,
               component: str | None = None, *, principal: str | None = None, id: str | None = None) -> dict:
        """Chain a new entry (`id`: a retry with the same id lands once)."""
        return self.record(new_entry(action, target, reason, before, after, component, principal, id))

    def record(self, entry: dict) -> dict:
        """Chain a `new_entry` as the next seq unless its id is chained already; the entry with its seq."""
        for attempt in range(APPEND_TRIES):
            try:
                dt = self._table()
                landed = dt.transaction_version(APP_PREFIX + entry["id"])
                if landed is not None:
                    return entry | {"seq": landed}
                seq, prev = self._head(dt)
                row = entry | {"seq": seq, "prev_hash": prev, "hash": entry_hash(seq, prev, entry)}
                self._commit(dt, row)
                return row
            except CommitFailedError:
                time.sleep(random.uniform(0, 0.005 * 2 ** min(attempt, 6)))
        raise AuditConflict(f"audit entry {entry['id']} ({entry['action']}): the chain's head moved "
                            f"{APPEND_TRIES} times under it")

    def _table(self) -> DeltaTable:
        if not self.evolved:
            self.lake.create(TABLE, AUDIT_SCHEMA, add_missing=True)
            self.evolved = True
        return self.lake.open(TABLE)

    @staticmethod
    def _head(dt: DeltaTable) -> tuple[int, str]:
        """(the next seq, the last entry's hash): from the last commit's metadata, else from the rows."""
        last = (dt.history(1) or [{}])[0]
        if last.get("version") == dt.version() and SEQ_KEY in last and HASH_KEY in last:
            return int(last[SEQ_KEY]) + 1, last[HASH_KEY]
        rows = dt.to_pyarrow_dataset().to_table(columns=["seq", "hash"])
        rows = rows.filter(pc.is_valid(rows.column("seq")))
        if rows.num_rows == 0:
            return 0, GENESIS
        top = rows.sort_by([("seq", "descending")]).slice(0, 1).to_pylist()[0]
        return top["seq"] + 1, top["hash"]

    @staticmethod
    def _commit(dt: DeltaTable, row: dict) -> None:
        """Append `row` only if the table is still at the version it was read at (else CommitFailedError)."""
        data = conform(pa.Table.from_pylist([row | {"at": datetime.fromisoformat(row["at"])}], schema=AUDIT_SCHEMA),
                       arrow_schema_of(dt), TABLE)
        properties = CommitProperties(max_commit_retries=0,
                                      app_transactions=[Transaction(APP_PREFIX + row["id"], row["seq"])],
                                      custom_metadata={SEQ_KEY: str(row["seq"]), HASH_KEY: row["hash"]})
        write_deltalake(dt, data, mode="append", commit_properties=properties)

    def rows(self, dt: DeltaTable | None = None) -> pa.Table:
        """Every row as stored, of `dt` or the latest version, with the chain's columns (null on an old table)."""
        if dt is None:
            if not self.lake.exists(TABLE):
                return AUDIT_SCHEMA.empty_table()
            dt = self.lake.open(TABLE)
        rows = dt.to_pyarrow_dataset().to_table()
        for field in AUDIT_SCHEMA:
            if field.name not in rows.column_names:
                rows = rows.append_column(field.name, pa.nulls(rows.num_rows, field.type))
        return rows.select(AUDIT_SCHEMA.names)

    def read(self, limit: int | None = None, action: str | None = None) -> list[dict]:
        """Entries, newest first: the chain by seq (never the writers' clocks), then the rows from before it."""
        rows = self.rows()
        if action is not None:
            rows = rows.filter(pc.equal(rows.column("action"), action))
        rows = rows.sort_by([("seq", "descending"), ("at", "descending")])
        if limit:
            rows = rows.slice(0, limit)
        return [row | {"at": row["at"].isoformat(timespec="milliseconds"), "principal": row["principal"] or row["actor"],
                       "before": json.loads(row["before"] or "null"), "after": json.loads(row["after"] or "null")}
                for row in rows.to_pylist()]
