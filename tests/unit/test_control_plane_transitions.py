"""The control plane's transitions driven one call at a time, without Ray: its real state table and audit trail on a
local lake, and an in-memory model registry that can be made to fail. Who is champion has one writer, and MLflow's
aliases are the projection of the committed state.

| transition | test |
|---|---|
| gate passed: champion, then challenger | test_admitting_versions_makes_a_champion_then_a_challenger |
| alias moved by hand, rollout running | test_a_new_champion_by_hand_stops_the_rollout_and_keeps_the_old_as_previous |
| unknown alias or version | test_an_unknown_alias_or_version_is_refused_and_nothing_is_written |
| rollback, then the same call again | test_a_rollback_retried_changes_nothing_more |
| plan set by hand, rollout running | test_a_plan_set_by_hand_stops_a_running_rollout_unless_it_keeps_it |
| rollout promotes; stale rollout change | test_the_rollout_promotes_through_the_state_and_a_stale_change_is_refused |
| crash between commit and alias move | test_aliases_left_behind_by_a_registry_outage_are_repaired_at_the_next_start_and_change |
| document from before / from a newer mlray | test_an_old_document_takes_the_registrys_aliases_once_and_a_newer_one_is_refused |
| another writer committed first | test_a_concurrent_writer_wins_and_the_loser_reads_its_state |
| a registry that hangs | test_a_registry_that_hangs_delays_no_change_and_gets_the_latest_aliases_when_it_answers |
| keys added, revoked (hash or fingerprint), unknown | test_keys_are_added_and_revoked_one_at_a_time_by_hash_or_fingerprint |
| serve settings set, set again | test_serve_settings_are_kept_once_and_each_change_is_audited |
| owner just restarted | test_a_new_owner_waits_for_as_many_replicas_as_serve_runs_before_a_change_is_settled |
"""

import asyncio

import pytest

from mlray.audit import AuditLog
from mlray.control.state import Aliases, RolloutStatus
from mlray.errors import UserError
from mlray.lake import Lake
from mlray.lake.state import SERVING_STATE, StateConflict, StateTable
from mlray.serve.control import ControlPlane
from mlray.serve.routing import TrafficPlan


class MemoryRegistry:
    """The registry port in memory: versions, aliases and tags; `down` makes every call fail as MLflow would."""

    model_name = "card-fraud"

    def __init__(self, versions=("1", "2", "3")):
        self.versions, self.alias, self.tags, self.down, self.calls = set(versions), {}, {}, False, 0

    def _answer(self):
        self.calls += 1
        if self.down:
            raise ConnectionError("registry unreachable")

    def version_of(self, alias):
        self._answer()
        return self.alias.get(alias)

    def resolve(self, reference):
        self._answer()
        version = self.alias.get(reference, reference)
        if version not in self.versions:
            raise UserError(f"model {reference!r} not found in the registry")
        return self.model_name, version

    def artifact_uri(self, name, version):
        self._answer()
        return f"file:///artifacts/{name}/{version}"

    def project_aliases(self, aliases):
        self._answer()
        changes = [f"{a}: {self.alias.get(a)} → {v}" for a, v in aliases.items() if self.alias.get(a) != v]
        self.alias = {a: v for a, v in aliases.items() if v is not None}
        return changes

    def tag_version(self, version, key, value):
        self._answer()
        self.tags[(version, key)] = value


@pytest.fixture
def parts(project):
    """(make a control plane as a restart would, the registry, the state table, the audit trail)."""
    registry = MemoryRegistry()
    table = StateTable(Lake.from_platform(project.platform), SERVING_STATE)
    audit = AuditLog(project.platform)

    def make():
        return ControlPlane(project, store=table, audit=audit, registry=lambda: registry)

    return make, registry, table, audit


def run(scenario):
    return asyncio.run(scenario())


RUNNING = {"champion": "1", "challenger": "2", "status": RolloutStatus.RUNNING, "step": 1}


def test_admitting_versions_makes_a_champion_then_a_challenger(parts):
    make, registry, table, audit = parts

    async def scenario():
        control = make()
        assert await control.admit("1", "user:a") == "champion"
        assert await control.admit("2", "user:a") == "challenger"
        revision = control.revision
        assert await control.admit("2", "user:a") == "challenger"  # admitted again (a retried job): nothing new
        return control, revision

    control, revision = run(scenario)
    assert control.revision == revision and table.read()[0] == revision
    assert table.read()[1]["aliases"] == {"champion": "1", "challenger": "2", "previous": None}
    assert registry.alias == {"champion": "1", "challenger": "2"}  # projected after each commit
    assert [(e["action"], e["target"], e["component"]) for e in audit.read(action="alias")] == [
        ("alias", "card-fraud@challenger", "user:a"), ("alias", "card-fraud@champion", "user:a")]


def test_a_new_champion_by_hand_stops_the_rollout_and_keeps_the_old_as_previous(parts):
    make, registry, table, audit = parts

    async def scenario():
        control = make()
        await control.admit("1", "user:a")
        await control.update_rollout(0, RUNNING, "controller:x")
        return await control.set_alias("champion", "3", "user:b")

    state = run(scenario)
    assert state["aliases"] == {"champion": "3", "challenger": None, "previous": "1"}
    assert state["rollout"]["status"] == RolloutStatus.STOPPED and "user:b" in state["rollout"]["reason"]
    assert registry.alias == {"champion": "3", "previous": "1"}
    assert [e["action"] for e in audit.read()][:2] == ["alias", "canary.stop"]


def test_an_unknown_alias_or_version_is_refused_and_nothing_is_written(parts):
    make, registry, table, _ = parts

    async def scenario():
        control = make()
        await control.admit("1", "user:a")
        revision = control.revision
        with pytest.raises(UserError, match="alias 'winner' is not one of champion, challenger, previous"):
            await control.set_alias("winner", "2", "user:a")
        with pytest.raises(UserError, match="'9' not found in the registry"):
            await control.set_alias("champion", "9", "user:a")
        return revision

    revision = run(scenario)
    assert table.read()[0] == revision and registry.alias == {"champion": "1"}


def test_a_rollback_retried_changes_nothing_more(parts):
    make, registry, table, audit = parts

    async def scenario():
        control = make()
        await control.admit("1", "user:a")
        await control.set_alias("champion", "2", "user:a")  # champion 2, previous 1
        first = await control.rollback_to("1", "user:a")
        again = await control.rollback_to("1", "user:a")  # as a client retries a call whose owner died
        return first, again

    first, again = run(scenario)
    assert first["aliases"] == {"champion": "1", "challenger": None, "previous": "2"}
    assert again["revision"] == first["revision"] and again["aliases"] == first["aliases"]  # not swapped back
    assert TrafficPlan.from_dict(first["plan"]).weights == {"1": 1.0}
    assert first["packages"] == {"1": "file:///artifacts/card-fraud/1"}
    assert [e["action"] for e in audit.read(action="rollback")] == ["rollback"]


def test_a_plan_set_by_hand_stops_a_running_rollout_unless_it_keeps_it(parts):
    make, *_ = parts
    plan = TrafficPlan("1", {"1": 1.0, "3": 0.0}).to_dict()

    async def scenario():
        control = make()
        await control.admit("1", "user:a")
        await control.update_rollout(0, RUNNING, "controller:x")
        kept = await control.set_plan(plan, "user:a", "deploy", "v3 at weight 0", overrides_rollout=False)
        stopped = await control.set_plan(plan, "user:a", "traffic", "weights by hand")
        return kept, stopped

    kept, stopped = run(scenario)
    assert kept["rollout"]["status"] == RolloutStatus.RUNNING
    assert stopped["rollout"]["status"] == RolloutStatus.STOPPED
    assert stopped["rollout_revision"] == stopped["revision"]  # the controller's next change is refused


def test_the_rollout_promotes_through_the_state_and_a_stale_change_is_refused(parts):
    make, registry, table, audit = parts

    async def scenario():
        control = make()
        await control.admit("1", "user:a")
        await control.admit("2", "user:a")
        started = await control.update_rollout(0, RUNNING, "controller:x")
        done = await control.update_rollout(started["rollout_revision"], RUNNING | {"status": RolloutStatus.PROMOTED},
                                            "controller:x", plan=TrafficPlan.only("2").to_dict(), promote="2",
                                            audit=[{"action": "canary.promote", "target": "card-fraud v2", "reason": "ok"}])
        with pytest.raises(StateConflict, match="the rollout changed since revision"):
            await control.update_rollout(started["rollout_revision"], RUNNING, "controller:y")
        return done

    done = run(scenario)
    assert done["aliases"] == {"champion": "2", "challenger": None, "previous": "1"}
    assert registry.alias == {"champion": "2", "previous": "1"}
    assert table.read()[1]["rollout"]["status"] == RolloutStatus.PROMOTED
    assert audit.read(action="canary.promote")[0]["component"] == "controller:x"


def test_aliases_left_behind_by_a_registry_outage_are_repaired_at_the_next_start_and_change(parts):
    """The crash between the state commit and the alias move: the commit stands, the registry lags, and the control
    plane puts it right by itself when it starts again, or at its next change if it keeps running."""
    make, registry, table, _ = parts

    async def outage():
        control = make()
        await control.admit("1", "user:a")
        await control.admit("2", "user:a")
        await control.update_rollout(0, RUNNING, "controller:x")
        registry.down = True  # MLflow goes away after the commit, before the projection
        state = await control.update_rollout(control.state.rollout_revision, RUNNING | {"status": "promoted"},
                                             "controller:x", promote="2")
        return control, state

    control, state = run(outage)
    assert state["aliases"]["champion"] == "2" and registry.alias["champion"] == "1" and not control.projected
    registry.down = False

    async def restart():
        again = make()  # a restart: the state read once, the registry repaired in the background
        await again.snapshot()
        await again.projecting
        return again

    assert run(restart).projected and registry.alias == {"champion": "2", "previous": "1"}

    registry.alias = {"champion": "1"}  # edited behind the control plane's back, or lagging again
    registry.down = True

    async def next_change():
        await control.set_keys(["a" * 64], "user:a")  # while down: the commit stands
        registry.down = False
        await control.set_keys(["b" * 64], "user:a")  # the next change repairs what lagged

    run(next_change)
    assert registry.alias == {"champion": "2", "previous": "1"}


def test_an_old_document_takes_the_registrys_aliases_once_and_a_newer_one_is_refused(parts):
    make, registry, table, _ = parts
    registry.alias = {"champion": "2", "previous": "1"}
    table.write({"plan": TrafficPlan.only("2").to_dict(), "keys": None, "rollout": None, "rollout_revision": 0}, 0)

    async def adopt():
        control = make()
        return await control.aliases(), await control.aliases()

    first, second = run(adopt)
    assert first == second == {"champion": "2", "challenger": None, "previous": "1"}
    assert table.read() == (2, table.read()[1]) and table.read()[1]["aliases"] == first  # written once

    table.write({"plan": None, "shards": 4}, 2)

    async def newer():
        await make().snapshot()

    with pytest.raises(UserError, match=r"serving_state revision 3 is not a document this mlray reads: shards: Extra"):
        run(newer)


def test_a_concurrent_writer_wins_and_the_loser_reads_its_state(parts):
    make, registry, table, _ = parts

    async def race():
        control = make()
        await control.admit("1", "user:a")
        revision, document = table.read()
        table.write(document | {"keys": ["c" * 64]}, revision, "another owner")  # e.g. a second actor on a split cluster
        with pytest.raises(StateConflict):
            await control.set_keys(["d" * 64], "user:a")
        return control

    control = run(race)
    assert control.state.keys == ["c" * 64] and control.revision == table.read()[0]


def test_a_registry_that_hangs_delays_no_change_and_gets_the_latest_aliases_when_it_answers(parts, monkeypatch):
    import threading

    from mlray.serve import control as plane

    make, registry, table, _ = parts
    monkeypatch.setattr(plane, "PROJECTION_WAIT_S", 0.2)
    answers, project = threading.Event(), registry.project_aliases

    def hanging(aliases):
        answers.wait(30)  # an MLflow that retries for minutes
        return project(aliases)

    registry.project_aliases = hanging

    async def scenario():
        control = make()
        assert await control.admit("1", "user:a") == "champion"  # each change returns while the registry hangs
        await control.set_keys(["a" * 64], "user:a")
        assert await control.admit("2", "user:a") == "challenger"
        assert registry.alias == {} and not control.projecting.done()
        answers.set()
        await control.projecting

    run(scenario)
    assert registry.alias == {"champion": "1", "challenger": "2"} and table.read()[1]["keys"] == ["a" * 64]


def test_aliases_move_as_a_champion_replaced_keeps_the_old_as_previous():
    aliases = Aliases().admitted("1").admitted("2")
    assert aliases == Aliases(champion="1", challenger="2")
    assert aliases.promoted("2") == Aliases(champion="2", previous="1")
    assert aliases.promoted("2").promoted("2") == Aliases(champion="2", previous="1")
    assert aliases.moved("previous", "3") == Aliases(champion="1", challenger="2", previous="3")
    assert aliases.role_of("2") == "challenger" and aliases.role_of("9") is None


def test_keys_are_added_and_revoked_one_at_a_time_by_hash_or_fingerprint(parts):
    from mlray.serve.auth import fingerprint, hash_key

    make, _, table, audit = parts
    first, second, third = (hash_key(c * 40) for c in "abc")

    async def scenario():
        control = make()
        await control.change_keys([first], [], "cli")
        await control.change_keys([second, third], [], "cli")  # added: the first stays
        await control.change_keys([], [fingerprint(second)], "cli")  # by the fingerprint `mlray keys list` shows
        await control.change_keys([], [third], "cli")  # by the hash of the key read from stdin
        for wrong in (fingerprint(second), "sha256:", "sha256:0000000000"):
            with pytest.raises(UserError, match="no accepted key match"):
                await control.change_keys([], [wrong], "cli")
        await control.change_keys([first], [], "cli")  # already accepted: no new revision
        return control

    control = run(scenario)
    assert table.read()[1]["keys"] == [first] and control.revision == 4
    assert [e["reason"] for e in audit.read(action="keys.change")] == [
        "0 key(s) added, 1 revoked", "0 key(s) added, 1 revoked", "2 key(s) added, 0 revoked",
        "1 key(s) added, 0 revoked"]
    assert first not in str(audit.read())  # fingerprints only


def test_serve_settings_are_kept_once_and_each_change_is_audited(parts):
    from mlray.spec import ServeSpec

    make, _, table, audit = parts
    closed, open_ = ServeSpec().model_dump(mode="json"), ServeSpec(auth=False).model_dump(mode="json")

    async def scenario():
        control = make()
        await control.set_serve(open_, "deploy")
        await control.set_serve(closed, "deploy")
        revision = control.revision
        await control.set_serve(closed, "deploy")  # the same settings again: no new revision
        with pytest.raises(ValueError, match="port"):
            await control.set_serve(closed | {"port": 0}, "deploy")  # validated as the spec's section
        return control, revision

    control, revision = run(scenario)
    assert control.revision == revision and table.read()[1]["serve"] == closed
    assert [e["reason"] for e in audit.read(action="serve.settings")] == ["auth False → True", "first settings"]


def test_a_new_owner_waits_for_as_many_replicas_as_serve_runs_before_a_change_is_settled(project):
    """An owner started a moment ago knows no replica yet: `settled` must not call a change in effect until as many
    replicas as Serve runs have applied it (a replica that lost the old owner calls the new one after its back-off)."""
    table = StateTable(Lake.from_platform(project.platform), SERVING_STATE)
    control = ControlPlane(project, store=table, audit=AuditLog(project.platform), registry=lambda: MemoryRegistry(),
                           running_ingress=lambda application: 2)

    async def scenario():
        revision = (await control.set_keys(["a" * 64], "user:a"))["revision"]
        alone = await control.settled(revision, timeout=0.2)  # no replica has called in
        await control.watch(revision, "replica-1", timeout=0.01)
        one = await control.settled(revision, timeout=0.2)  # one of Serve's two
        await control.watch(revision - 1, "replica-2", timeout=0.01)  # the second, a revision behind
        behind = await control.settled(revision, timeout=0.2)
        await control.watch(revision, "replica-2", timeout=0.01)
        return alone, one, behind, await control.settled(revision, timeout=0.2)

    assert run(scenario) == (False, False, False, True)

    def failing(application):
        raise RuntimeError("Serve's controller is restarting")

    unsure = ControlPlane(project, store=table, audit=AuditLog(project.platform), registry=lambda: MemoryRegistry(),
                          running_ingress=failing)

    async def without_serve():  # Serve does not say: the replicas known are waited for, as before
        revision = (await unsure.snapshot())["revision"]
        await unsure.watch(revision, "replica-1", timeout=0.01)
        return await unsure.settled(revision, timeout=0.2)

    assert run(without_serve) is True
