"""Every loop runs on the spec revision the control plane holds: a deploy or `monitor start` hands a spec over, the
control plane stores it redacted and keeps its revision, and the control plane itself, the rollout controller and the
monitor move to it, after a restart with their creation spec too. Without Ray: the real state table and audit trail
on a local lake, the in-memory registry of the control plane's transitions, the rollout's fake control plane.

| behaviour | test |
|---|---|
| a handed-over spec is committed once, audited by section | test_a_handed_over_spec_is_held_once_and_its_... |
| a control plane restarted with its creation spec moves to the held one | test_a_restarted_control_plane_runs_on_... |
| a stored revision keeps the secrets in hand, only where they match | test_a_followed_revision_keeps_the_secrets_... |
| an unreadable or foreign revision leaves the actor on its spec | test_an_unreadable_or_foreign_revision_leaves_... |
| another project's spec is refused by name | test_another_projects_spec_is_refused_in_one_line |
| the rollout controller follows the control plane's revision | test_the_rollout_controller_moves_to_the_revision_... |
| the monitor's status names the spec it runs on | test_the_monitor_reports_the_spec_it_runs_on |
| a fresh actor keeps its own spec until a new revision | test_a_fresh_actor_keeps_the_spec_it_was_handed_until_... |
| the running monitor moves on deploy, and after a restart | tests/integration/test_serve.py |
"""

import asyncio
import logging

import pytest
import yaml
from test_control_plane_transitions import MemoryRegistry
from test_rollout_incident import FakeControlPlane

from mlray.audit import AuditLog
from mlray.errors import UserError
from mlray.lake import Lake
from mlray.lake.specs import LiveSpec, spec_digest, store_spec
from mlray.lake.state import SERVING_STATE, StateTable
from mlray.monitor.watch import Monitor
from mlray.rollout.controller import Rollout
from mlray.serve.control import ControlPlane
from mlray.spec import RolloutSpec, parse_spec

KEY, PASSWORD = "AKIA-SENTINEL-4242", "pw-SENTINEL-4242"


def with_rules(spec, window_rows: int, interval: str = "2m"):
    """`spec` with other monitor and rollout rules: a new revision."""
    rollout = RolloutSpec.model_validate(spec.rollout.model_dump() | {"interval": interval})
    return spec.model_copy(update={"monitor": spec.monitor.model_copy(update={"window_rows": window_rows}),
                                   "rollout": rollout})


def revision_of(spec) -> dict:
    return {"digest": spec_digest(spec), "uri": store_spec(Lake.from_platform(spec.platform), spec)}


@pytest.fixture
def parts(project):
    """(make a control plane with a spec, as its creation or a restart would; the state table; the audit trail)."""
    registry = MemoryRegistry()
    table = StateTable(Lake.from_platform(project.platform), SERVING_STATE)
    audit = AuditLog(project.platform)

    def make(spec):
        return ControlPlane(spec, store=table, audit=audit, registry=lambda: registry)

    return make, table, audit


def test_a_handed_over_spec_is_held_once_and_its_change_audited_by_section(project, parts):
    make, table, audit = parts
    changed = with_rules(project, window_rows=1234)

    async def scenario():
        control = make(project)
        await control.set_spec(project, revision_of(project), "deploy")
        await control.set_spec(changed, revision_of(changed), "deploy")
        revision = control.revision
        await control.set_spec(changed, revision_of(changed), "deploy")  # the same spec again: nothing new
        return control, revision

    control, revision = asyncio.run(scenario())
    assert control.revision == revision and table.read()[1]["spec"]["digest"] == spec_digest(changed)
    assert control.spec.monitor.window_rows == 1234
    entries = audit.read(action="spec.change")
    assert [e["reason"] for e in entries] == ["changed: rollout, monitor", "first spec held"]  # newest first
    assert entries[0]["after"] == spec_digest(changed) and entries[0]["before"] == spec_digest(project)


def test_a_restarted_control_plane_runs_on_the_spec_handed_over_since(project, parts, monkeypatch):
    from mlray.serve import control

    make, _, _ = parts
    changed = with_rules(project, window_rows=321)

    async def scenario():
        await make(project).set_spec(changed, revision_of(changed), "deploy")
        monkeypatch.setattr(control, "restarted", lambda: True)
        restarted = make(project)  # Ray recreates the actor with the spec it was created with
        await restarted.snapshot()  # its first read of the state
        return restarted

    restarted = asyncio.run(scenario())
    assert restarted.spec.monitor.window_rows == 321 and restarted.live.digest == spec_digest(changed)


def _with_secrets(starter_text, tmp_path, user: str):
    doc = yaml.safe_load(starter_text)
    doc["platform"] |= {"storage_options": {"AWS_SECRET_ACCESS_KEY": KEY, "AWS_REGION": "eu-west-1"},
                        "mlflow_tracking_uri": f"https://{user}:{PASSWORD}@mlflow.example:5000"}
    return parse_spec(yaml.safe_dump(doc), "mlray.yaml", base_dir=tmp_path)


def test_a_followed_revision_keeps_the_secrets_in_hand_only_where_they_match(starter_text, tmp_path):
    held = _with_secrets(starter_text, tmp_path, "alice")
    live = LiveSpec(held, restarted=True)
    new = with_rules(held, window_rows=777)
    assert live.follow(revision_of(new)) and live.spec.monitor.window_rows == 777
    assert live.spec.platform.storage_options == {"AWS_SECRET_ACCESS_KEY": KEY, "AWS_REGION": "eu-west-1"}
    assert live.spec.platform.mlflow_tracking_uri == f"https://alice:{PASSWORD}@mlflow.example:5000"
    assert not live.follow(revision_of(new))  # the same revision again: nothing to do

    other_user = with_rules(_with_secrets(starter_text, tmp_path, "bob"), window_rows=778)
    assert live.follow(revision_of(other_user))  # bob's password is not alice's: it is not made up
    assert live.spec.platform.mlflow_tracking_uri == "https://mlflow.example:5000"  # MLflow reads its env then
    assert live.spec.platform.storage_options["AWS_SECRET_ACCESS_KEY"] == KEY  # the key's redacted form matched


def test_an_unreadable_or_foreign_revision_leaves_the_spec_in_hand(project, tmp_path, caplog):
    live = LiveSpec(project, restarted=True)
    with caplog.at_level(logging.WARNING, logger="mlray.lake.specs"):
        assert not live.follow({"digest": "0" * 24, "uri": str(tmp_path / "gone.json")})
        foreign = project.model_copy(update={"name": "other-project"})
        assert not live.follow(revision_of(foreign))
    assert live.spec is project and live.digest == spec_digest(project)
    assert "cannot read the stored spec" in caplog.text and "a spec of other-project" in caplog.text


def test_another_projects_spec_is_refused_in_one_line(project):
    other_lake = project.model_copy(update={"platform": project.platform.model_copy(update={"lake_root": "/elsewhere"})})
    with pytest.raises(UserError, match=f"a spec of card-fraud on /elsewhere cannot replace card-fraud on "
                                        f"{project.platform.lake_uri}"):
        LiveSpec(project).offer(other_lake)


def test_a_fresh_actor_keeps_the_spec_it_was_handed_until_the_control_plane_commits_another(project):
    live = LiveSpec(project)  # started by `actor.start(spec)` while the control plane held an older deploy's spec
    older, newer = with_rules(project, window_rows=2222), with_rules(project, window_rows=3333)
    assert not live.follow(revision_of(older)) and live.spec is project
    assert not live.follow(revision_of(older))  # the same revision again
    assert live.follow(revision_of(newer)) and live.spec.monitor.window_rows == 3333  # a deploy since


def test_the_rollout_controller_moves_to_the_revision_the_control_plane_holds(project, monkeypatch):
    from mlray.rollout import controller
    from mlray.serve import control

    monkeypatch.setattr(controller, "restarted", lambda: True)  # Ray restarted it with its creation spec

    plane = FakeControlPlane(None)
    changed = with_rules(project, window_rows=999, interval="7m")
    held = revision_of(changed)
    monkeypatch.setattr(plane, "snapshot", lambda: {"rollout": None, "rollout_revision": 1, "spec": held})
    monkeypatch.setattr(control, "client", lambda _spec, *args, **kwargs: plane)
    rollout = Rollout(project)
    assert rollout.status() is None
    assert rollout.spec.rollout.interval.total_seconds() == 420 and rollout.rules.interval.total_seconds() == 420
    assert rollout.live.digest == held["digest"]


def test_the_monitor_reports_the_spec_it_runs_on(project):
    assert Monitor(project).spec_revision == spec_digest(project)
    assert Monitor(project, spec_revision="abc").spec_revision == "abc"
