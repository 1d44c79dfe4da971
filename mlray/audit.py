"""The audit log: every deploy, weight change, promotion, rollback and key change, appended as one JSON line.

Who or what, when, why, and the state before and after. One line is written with one `write`
on a file opened for appending, so concurrent writers never interleave within a line.
"""

from __future__ import annotations

import getpass
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def default_actor() -> str:
    try:
        return f"user:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "user:unknown"


class AuditLog:
    def __init__(self, state_dir: str):
        self.path = Path(state_dir) / "audit" / "audit.jsonl"

    def append(self, action: str, target: str, reason: str, before: Any = None, after: Any = None,
               actor: str | None = None) -> dict:
        entry = {"at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "actor": actor or default_actor(),
                 "action": action, "target": target, "reason": reason, "before": before, "after": after}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(entry, default=str, sort_keys=False) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return entry

    def read(self, limit: int | None = None, action: str | None = None) -> list[dict]:
        """Entries, newest first."""
        if not self.path.is_file():
            return []
        entries = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        entries = [e for e in entries if action is None or e["action"] == action]
        entries.reverse()
        return entries[:limit] if limit else entries
