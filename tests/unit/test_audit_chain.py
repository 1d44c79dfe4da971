"""The audit log as a hash chain, on real local Delta tables: appends race and land once, and `verify` names the first
entry edited, deleted, reordered or inserted behind its back with plain deltalake; the control plane's entries commit
with its state and reach the chain after a crash in between."""

import asyncio
import threading

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError
from typer.testing import CliRunner

from mlray import audit as audit_module
from mlray.audit import CONTENT, TABLE, AuditConflict, AuditLog, current_principal, entry_hash
from mlray.audit_verify import verify
from mlray.cli import app
from mlray.lake import Lake
from mlray.lake.state import SERVING_STATE, StateTable
from mlray.serve.control import ControlPlane
from mlray.spec import PlatformSpec

OLD_SCHEMA = pa.schema([
    pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("actor", pa.string(), nullable=False),
    pa.field("action", pa.string(), nullable=False),
    pa.field("target", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("before", pa.string()),
    pa.field("after", pa.string()),
])


@pytest.fixture
def log(tmp_path) -> AuditLog:
    """An audit log of ten entries, seq 0 to 9."""
    trail = AuditLog(PlatformSpec(state_dir=str(tmp_path)))
    for i in range(10):
        trail.append("traffic", "card-fraud", f"step {i}", {"weights": {"1": 1.0}}, {"weights": {"2": i / 10}},
                     component="rollout-controller")
    return trail


def table_of(trail: AuditLog) -> DeltaTable:
    return DeltaTable(trail.lake.uri(TABLE))


def rows_of(trail: AuditLog) -> tuple[list[dict], pa.Schema]:
    table = table_of(trail).to_pyarrow_table()
    return table.sort_by("seq").to_pylist(), table.schema


def overwrite(trail: AuditLog, rows: list[dict], schema: pa.Schema) -> None:
    write_deltalake(table_of(trail), pa.Table.from_pylist(rows, schema=schema), mode="overwrite")


def first(trail: AuditLog):
    verdict = verify(trail)
    assert not verdict.intact
    return verdict.findings[0]


def test_a_chain_of_entries_verifies_and_reads_by_seq(log):
    verdict = verify(log)
    assert verdict.intact and verdict.entries == 10 and verdict.head[0] == 9
    assert verdict.summary().startswith("10 entries, chain intact (head seq 9, hash ")
    entries = log.read()
    assert [e["seq"] for e in entries] == list(range(9, -1, -1))
    assert entries[0]["principal"] == entries[0]["actor"] == current_principal()
    assert entries[0]["component"] == "rollout-controller" and entries[0]["after"] == {"weights": {"2": 0.9}}
    assert [e["reason"] for e in log.read(limit=2, action="traffic")] == ["step 9", "step 8"]


def test_an_entry_edited_with_plain_deltalake_is_named(log):
    table_of(log).update(updates={"reason": "'looked fine'"}, predicate="seq = 4")
    verdict = verify(log)
    assert [f.kind for f in verdict.findings] == ["edited", "rewritten"]
    assert verdict.findings[0].seq == 4 and "entry seq 4 edited" in verdict.findings[0].message
    assert "UPDATE" in verdict.findings[1].message and verdict.findings[1].version == 11


def test_an_entry_edited_and_rehashed_is_named(log):
    rows, schema = rows_of(log)
    rows[4]["reason"] = "looked fine"
    rows[4]["hash"] = entry_hash(4, rows[4]["prev_hash"], rows[4])
    overwrite(log, rows, schema)
    finding = first(log)
    assert (finding.kind, finding.seq) == ("edited", 4) and "seq 5 no longer follows it" in finding.message


def test_an_entry_deleted_is_named_missing(log):
    table_of(log).delete("seq = 6")
    verdict = verify(log)
    assert verdict.findings[0].message == "entry seq 6 is missing (deleted): the chain goes from seq 5 to seq 7"
    assert "DELETE" in verdict.findings[1].message


def test_a_deleted_last_entry_shows_in_the_history(log):
    table_of(log).delete("seq = 9")
    assert [f.kind for f in verify(log).findings] == ["rewritten"]


@pytest.mark.parametrize("how", ["contents swapped", "seqs swapped"])
def test_entries_reordered_are_named(log, how):
    rows, schema = rows_of(log)
    if how == "contents swapped":
        for name in CONTENT:
            rows[3][name], rows[6][name] = rows[6][name], rows[3][name]
    else:
        rows[3]["seq"], rows[6]["seq"] = 6, 3
    overwrite(log, rows, schema)
    finding = first(log)
    assert (finding.kind, finding.seq) == ("reordered", 3)
    assert finding.message == "entry seq 3 reordered: its content was written as seq 6"


@pytest.mark.parametrize("seq", [5, 10])
def test_a_forged_row_is_named_inserted(log, seq):
    """A row made to look right (its hash computed, linked to the entry before), appended with plain deltalake: as a
    second seq 5, or as the next entry, seq 10."""
    rows, schema = rows_of(log)
    forged = rows[seq - 1] | {"id": "f" * 32, "seq": seq, "reason": "approved by nobody", "prev_hash": rows[seq - 1]["hash"]}
    forged["hash"] = entry_hash(seq, forged["prev_hash"], forged)
    write_deltalake(table_of(log), pa.Table.from_pylist([forged], schema=schema), mode="append")
    verdict = verify(log)
    assert (verdict.findings[0].kind, verdict.findings[0].seq) == ("inserted", seq)
    assert "f" * 32 in verdict.findings[0].message
    assert "an append made around the audit trail" in verdict.findings[1].message


def test_two_writers_racing_chain_every_entry_once(tmp_path):
    platform = PlatformSpec(state_dir=str(tmp_path))

    def write(name: str) -> None:
        trail = AuditLog(platform)
        for i in range(20):
            trail.append("keys.change", name, f"{name} {i}", component="cli")

    writers = [threading.Thread(target=write, args=(name,)) for name in ("a", "b")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    trail = AuditLog(platform)
    entries = trail.read()
    assert sorted(e["seq"] for e in entries) == list(range(40))
    assert sorted(e["reason"] for e in entries) == sorted(f"{n} {i}" for n in "ab" for i in range(20))
    assert verify(trail).intact


def test_a_retried_append_with_the_same_id_lands_once(log):
    written = log.append("rollback", "card-fraud v2", "too slow", component="cli", id="rollback-1")
    again = log.append("rollback", "card-fraud v2", "too slow", component="cli", id="rollback-1")
    assert written["seq"] == again["seq"] == 10
    assert [e["id"] for e in log.read(action="rollback")] == ["rollback-1"] and verify(log).intact


def test_an_append_that_keeps_losing_the_race_is_refused(log, monkeypatch):
    def lose(dt, row):
        raise CommitFailedError("Failed to commit transaction: version already exists")

    monkeypatch.setattr(AuditLog, "_commit", staticmethod(lose))
    monkeypatch.setattr(audit_module, "APPEND_TRIES", 3)
    with pytest.raises(AuditConflict, match="the chain's head moved 3 times"):
        log.append("deploy", "card-fraud", "v3")


def test_an_old_table_gains_the_chain_and_its_rows_stay_readable(tmp_path):
    from datetime import datetime, timezone

    trail = AuditLog(PlatformSpec(state_dir=str(tmp_path)))
    old = [{"at": datetime(2024, 1, d, tzinfo=timezone.utc), "actor": "user:ana", "action": "deploy", "target": "m",
            "reason": f"day {d}", "before": "null", "after": "null"} for d in (1, 2)]
    trail.lake.append(TABLE, pa.Table.from_pylist(old, schema=OLD_SCHEMA), schema=OLD_SCHEMA)
    trail.append("deploy", "m", "first chained", component="cli")
    assert [(e["seq"], e["reason"]) for e in trail.read()] == [(0, "first chained"), (None, "day 2"), (None, "day 1")]
    assert verify(trail).summary().endswith("; 2 entries from before the chain are not covered")


def test_the_principal_is_the_ray_job_or_the_os_user_never_the_environment_user(monkeypatch):
    import os
    import pwd
    import socket

    monkeypatch.setenv("USER", "someone-else")
    monkeypatch.setenv("LOGNAME", "someone-else")
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert current_principal() == f"user:{pwd.getpwuid(os.getuid()).pw_name}@{socket.gethostname()}"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {}, "metadata": {"job_submission_id": '
                                                      '"mlray-retrain-card-fraud-e1-w3"}}')
    assert current_principal() == "job:mlray-retrain-card-fraud-e1-w3"


class KilledAudit:
    """The audit port over a real AuditLog; the next `kills` chain appends fail, after writing (`landed`) or before,
    as a process killed around the append would."""

    def __init__(self, trail: AuditLog, kills: int = 1, landed: bool = False):
        self.trail, self.kills, self.landed = trail, kills, landed

    def append(self, *args, **kwargs):
        return self.trail.append(*args, **kwargs)

    def record(self, entry: dict):
        if self.kills:
            self.kills -= 1
            if self.landed:
                self.trail.record(entry)
            raise ConnectionError("killed")
        return self.trail.record(entry)


@pytest.fixture
def plane(project):
    """(make a control plane over an audit port, as a restart would; the state table; the audit log)."""
    table, trail = StateTable(Lake.from_platform(project.platform), SERVING_STATE), AuditLog(project.platform)

    def make(audit=None) -> ControlPlane:
        return ControlPlane(project, store=table, audit=audit or trail, registry=lambda: None)

    return make, table, trail


@pytest.mark.parametrize("landed", [False, True])
def test_a_control_plane_killed_between_its_commit_and_the_chain_loses_no_entry(plane, landed):
    make, table, trail = plane

    async def killed():
        return await make(KilledAudit(trail, landed=landed)).set_keys(["a" * 64], "cli", principal="user:ana@laptop")

    state = asyncio.run(killed())
    entry = table.read()[1]["audit_entries"][0]
    assert state["keys"] == ["a" * 64] and "audit_entries" not in state
    assert [e["id"] for e in trail.read()] == ([entry["id"]] if landed else [])

    async def restart():
        await make().snapshot()

    asyncio.run(restart())
    chained = trail.read()
    assert [(e["id"], e["action"], e["principal"], e["component"]) for e in chained] == [
        (entry["id"], "keys.change", "user:ana@laptop", "cli")]
    assert verify(trail).intact


def test_no_change_is_made_while_the_one_before_is_missing_from_the_chain(plane):
    make, table, trail = plane

    async def scenario():
        control = make(KilledAudit(trail, kills=2))
        await control.set_keys(["a" * 64], "cli")
        revision = control.revision
        with pytest.raises(ConnectionError, match="killed"):
            await control.set_keys(["b" * 64], "cli")
        assert table.read()[0] == revision
        await control.set_keys(["b" * 64], "cli")

    asyncio.run(scenario())
    assert [e["reason"] for e in trail.read()] == ["1 key(s) added, 1 revoked", "1 key(s) added, 0 revoked"]
    assert verify(trail).intact


def test_a_request_through_the_rollout_controller_names_who_asked(plane):
    make, _, trail = plane
    rollout = {"champion": "1", "challenger": "2", "status": "paused"}
    paused = [{"action": "canary.pause", "target": "card-fraud v2", "reason": "manual", "principal": "user:ana@laptop"}]

    async def scenario():
        await make().update_rollout(0, rollout, "controller:rollout-controller", audit=paused, principal="user:ray@node")

    asyncio.run(scenario())
    entry = trail.read()[0]
    assert (entry["principal"], entry["component"]) == ("user:ana@laptop", "controller:rollout-controller")


def test_audit_verify_exits_1_naming_the_first_problem_and_audit_lists(project, tmp_path):
    runner, spec = CliRunner(), str(tmp_path / "mlray.yaml")
    trail = AuditLog(project.platform)
    for i in range(3):
        trail.append("deploy", "card-fraud", f"v{i}", component="cli")
    intact = runner.invoke(app, ["audit", "verify", "--spec", spec])
    assert intact.exit_code == 0 and "3 entries, chain intact (head seq 2" in intact.stdout
    listed = runner.invoke(app, ["audit", "--spec", spec, "--limit", "2"])
    assert listed.exit_code == 0 and "v2" in listed.stdout and "v0" not in listed.stdout
    table_of(trail).update(updates={"reason": "'v9'"}, predicate="seq = 1")
    tampered = runner.invoke(app, ["audit", "verify", "--spec", spec])
    assert tampered.exit_code == 1
    assert tampered.stdout.splitlines()[0] == "entry seq 1 edited: its hash does not match its content"
