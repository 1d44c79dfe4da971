"""Walking the audit chain (`mlray audit verify`): the first entry edited, deleted, inserted or reordered, and every
commit to the table that changed rows in place or appended around the chain.

The chain alone finds a change to any entry but the last ones, unless whoever changed it recomputed every hash after
it; the table's history finds that too: an UPDATE, DELETE, MERGE, RESTORE or overwrite is never an audit append.
Compaction (OPTIMIZE) and VACUUM are allowed: they move rows between files, and the chain checks what they hold.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

from mlray.audit import APP_PREFIX, GENESIS, SEQ_KEY, TABLE, AuditLog, entry_hash

ALLOWED = frozenset({"CREATE TABLE", "ADD COLUMN", "OPTIMIZE", "VACUUM START", "VACUUM END"})  # and audit appends


@dataclass(frozen=True)
class Finding:
    kind: str  # edited, missing, inserted, reordered (an entry); rewritten (a commit)
    message: str
    seq: int | None = None
    version: int | None = None


@dataclass(frozen=True)
class Verdict:
    entries: int  # chained
    unchained: int  # written before the chain
    head: tuple[int, str] | None  # (seq, hash) of the last entry
    findings: tuple[Finding, ...]

    @property
    def intact(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        if self.findings:
            return "\n".join(f.message for f in self.findings)
        if self.head is None:
            return "no audit entries yet" + (f" ({self.unchained} from before the chain)" if self.unchained else "")
        before = f"; {self.unchained} entries from before the chain are not covered" if self.unchained else ""
        return f"{self.entries} entries, chain intact (head seq {self.head[0]}, hash {self.head[1]}){before}"


def verify(log: AuditLog) -> Verdict:
    """The chain and the history of one version of the audit table."""
    if not log.lake.exists(TABLE):
        return Verdict(0, 0, None, ())
    dt = log.lake.open(TABLE)
    rows = log.rows(dt).to_pylist()
    chained = [r for r in rows if r["seq"] is not None]
    first = check_chain(chained, lambda entry_id: dt.transaction_version(APP_PREFIX + entry_id) if entry_id else None)
    top = max(chained, key=lambda r: r["seq"], default=None)
    head = None if top is None else (top["seq"], top["hash"])
    return Verdict(len(chained), len(rows) - len(chained), head, (*([first] if first else []), *check_history(dt.history())))


def check_chain(rows: list[dict], landed: Callable[[str], int | None]) -> Finding | None:
    """The first problem of the chained rows in seq order; `landed(id)`: the seq its commit carries, or None."""
    stray = next((row for row in rows if row["seq"] < 0), None)
    if stray is not None:
        return Finding("inserted", f"entry seq {stray['seq']} inserted: a chain starts at seq 0", stray["seq"])
    by_seq: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_seq[row["seq"]].append(row)
    by_hash = {row["hash"]: row for row in rows}
    last, prev = max(by_seq, default=-1), GENESIS
    for seq in range(last + 1):
        found = by_seq.get(seq, [])
        if not found:
            after = min(s for s in by_seq if s > seq)
            return Finding("missing", f"entry seq {seq} is missing (deleted): the chain goes from {_at(seq - 1)} to "
                                      f"seq {after}", seq)
        if len(found) > 1:
            forged = _forged(found, seq, prev, landed)
            return Finding("inserted", f"entry seq {seq} inserted: {len(found)} entries claim seq {seq} (the forged one: "
                                       f"id {forged['id']}, {forged['action']} on {forged['target']})", seq)
        row = found[0]
        if entry_hash(seq, row["prev_hash"], row) != row["hash"]:
            return _unsound(row, seq, rows, by_seq, last)
        if row["prev_hash"] != prev:
            return _unlinked(row, seq, by_seq, by_hash, landed)
        problem = _uncommitted(row, seq, landed)
        if problem is not None:
            return problem
        prev = row["hash"]
    return None


def _unsound(row: dict, seq: int, rows: list[dict], by_seq: dict, last: int) -> Finding:
    """An entry whose hash does not match its content: moved from elsewhere in the chain, or edited."""
    moved = _written_at(row, seq, rows, last)
    if moved is None:
        return Finding("edited", f"entry seq {seq} edited: its hash does not match its content", seq)
    if moved == seq - 1 and row["prev_hash"] == by_seq[seq - 1][0]["prev_hash"]:
        return Finding("inserted", f"entry seq {seq - 1} inserted: the entries after it were renumbered (seq {seq} "
                                   f"was written as seq {seq - 1})", seq - 1)
    return Finding("reordered", f"entry seq {seq} reordered: its content was written as seq {moved}", seq)


def _written_at(row: dict, seq: int, rows: list[dict], last: int) -> int | None:
    """The seq whose hash `row`'s content matches: another entry's, or its own under another seq."""
    for other in rows:
        if other["seq"] != seq and entry_hash(other["seq"], other["prev_hash"], row) == other["hash"]:
            return other["seq"]
    return next((s for s in range(last + 2) if s != seq and entry_hash(s, row["prev_hash"], row) == row["hash"]), None)


def _unlinked(row: dict, seq: int, by_seq: dict, by_hash: dict, landed: Callable) -> Finding:
    """A sound entry that does not follow the one before it."""
    before = by_seq[seq - 1][0] if seq > 0 else None
    if before is not None and row["prev_hash"] == before["prev_hash"]:
        return Finding("inserted", f"entry seq {seq - 1} inserted: seq {seq} follows {_at(seq - 2)} directly", seq - 1)
    source = by_hash.get(row["prev_hash"])
    if source is not None:
        return Finding("reordered", f"entry seq {seq} reordered: it follows seq {source['seq']} in the chain, "
                                    f"not {_at(seq - 1)}", seq)
    if before is not None and landed(row["id"]) == seq:
        return Finding("edited", f"entry seq {seq - 1} edited: its hash was recomputed, and seq {seq} no longer "
                                 f"follows it", seq - 1)
    return Finding("inserted", f"entry seq {seq} inserted: its prev_hash is not the hash of {_at(seq - 1)}", seq)


def _uncommitted(row: dict, seq: int, landed: Callable) -> Finding | None:
    """A sound, linked entry that no audit commit wrote at its seq."""
    where = landed(row["id"])
    if where is None:
        return Finding("inserted", f"entry seq {seq} inserted: no audit commit carries its id {row['id']}", seq)
    if where != seq:
        return Finding("reordered", f"entry seq {seq} reordered: it was committed as seq {where}", seq)
    return None


def _forged(found: list[dict], seq: int, prev: str, landed: Callable) -> dict:
    genuine = [r for r in found if r["prev_hash"] == prev and entry_hash(seq, prev, r) == r["hash"]
               and landed(r["id"]) == seq]
    return next((r for r in found if r not in genuine[:1]), found[-1])


def _at(seq: int) -> str:
    return f"seq {seq}" if seq >= 0 else "the start of the chain"


def check_history(commits: list[dict]) -> list[Finding]:
    """The commits, oldest first, that changed rows in place, or appended without an entry after the chain began."""
    findings, chained = [], False
    for commit in sorted(commits, key=lambda c: c.get("version", 0)):
        version, operation = commit.get("version"), commit.get("operation")
        parameters = commit.get("operationParameters") or {}
        if operation == "WRITE" and parameters.get("mode") == "Append":
            if SEQ_KEY in commit:
                chained = True
            elif chained:
                findings.append(Finding("inserted", f"table version {version}: an append made around the audit trail "
                                                    "(its commit carries no entry)", version=version))
        elif operation not in ALLOWED:
            how = ", ".join(f"{k} {v}" for k, v in parameters.items() if k in ("mode", "predicate"))
            findings.append(Finding("rewritten", f"table version {version}: {operation}{f' ({how})' if how else ''} "
                                                 "changed rows in place", version=version))
    return findings
