"""The audit log: every deploy, weight change, promotion, rollback and key change, one row each.

Who or what, when, why, and the state before and after. It is a Delta table under the lake root
(`audit_log`), so it outlives the node that wrote it and any process of the cluster can append to it:
appends never conflict in Delta, and each entry is one commit.
"""

from __future__ import annotations

import getpass
import json
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mlray.lake import Lake
from mlray.spec import PlatformSpec

TABLE = "audit_log"
AUDIT_SCHEMA = pa.schema([
    pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("actor", pa.string(), nullable=False),
    pa.field("action", pa.string(), nullable=False),
    pa.field("target", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("before", pa.string()),  # JSON
    pa.field("after", pa.string()),  # JSON
])


def default_actor() -> str:
    try:
        return f"user:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "user:unknown"


class AuditLog:
    def __init__(self, platform: PlatformSpec):
        self.lake = Lake.from_platform(platform)

    def append(self, action: str, target: str, reason: str, before: Any = None, after: Any = None,
               actor: str | None = None) -> dict:
        entry = {"at": datetime.now(timezone.utc), "actor": actor or default_actor(), "action": action,
                 "target": target, "reason": reason, "before": before, "after": after}
        row = entry | {"before": json.dumps(before, default=str), "after": json.dumps(after, default=str)}
        self.lake.append(TABLE, pa.Table.from_pylist([row], schema=AUDIT_SCHEMA), schema=AUDIT_SCHEMA)
        return entry | {"at": entry["at"].isoformat(timespec="milliseconds")}

    def read(self, limit: int | None = None, action: str | None = None) -> list[dict]:
        """Entries, newest first."""
        if not self.lake.exists(TABLE):
            return []
        rows = self.lake.read(TABLE)
        if action is not None:
            rows = rows.filter(pc.equal(rows.column("action"), action))
        rows = rows.sort_by([("at", "descending")])
        if limit:
            rows = rows.slice(0, limit)
        return [row | {"at": row["at"].isoformat(timespec="milliseconds"), "before": json.loads(row["before"]),
                       "after": json.loads(row["after"])} for row in rows.to_pylist()]
