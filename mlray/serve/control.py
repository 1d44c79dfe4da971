"""The control plane: one owner per project of who serves what, and who is champion.

`ControlPlane` holds the logic in plain Python, talking to its state store, audit trail and model registry through
the small ports of `mlray.control.ports` (unit tests give it in-memory fakes); `ControlPlaneActor` is it as a named,
detached Ray actor that restarts by itself. It alone writes the serving plan, the accepted API-key hashes, the
rollout's state and the champion/challenger/previous aliases, and it audits every change. Its state
(`ServingState`) is a `StateTable` under the lake root, written with a compare-and-swap, so a restart on any node finds
it. A change's audit entries are part of the revision that makes it (one compare-and-swap), and are chained into the
audit log right after; a crash in between loses none: the next start, or the next change, chains them first (the
chain takes an entry id once). An entry names the caller's principal, which `ControlPlaneClient` finds in the calling
process. Ingress replicas long-poll it (`watch`): a change reaches them as soon as it is committed.

The aliases' record is the state; MLflow's aliases are its projection, written after the commit and repaired
whenever they disagree (at start, and at every change after a projection failed), so a crash between the two
writes heals by itself. Callers pass it what it needs (keys included): it never reads its own environment. Its
constructor does no I/O: a restart while the lake is unreachable succeeds, and the state is read at the first call.

It also holds the spec revision the loops run on (`ServingState.spec`): a deploy or `monitor start` hands its spec
over (`set_spec`), and the control plane itself, the rollout controller and the monitor move to each revision it
commits; an actor Ray restarts with the spec it was created with moves to the held one at its first read of the state
(`mlray.lake.specs.LiveSpec`).

With every plan it keeps where each served version's package lives (`packages`, resolved in the registry when a
version first enters the plan), so an ingress replica started while MLflow is down still loads its models.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any, Callable

import ray

from mlray.actors import answer_retried, detached, restarted
from mlray.audit import AuditLog, current_principal, new_entry
from mlray.control.ports import AuditSink, ModelRegistry, StateStore
from mlray.control.state import ALIAS_NAMES, Aliases, RolloutState, RolloutStatus, ServingState, SpecRevision, read_document
from mlray.errors import UserError
from mlray.lake import Lake
from mlray.lake.specs import LiveSpec, sections_changed, spec_digest, store_spec
from mlray.lake.state import SERVING_STATE, StateConflict, StateTable
from mlray.runtime import control_plane_name
from mlray.serve.auth import fingerprint, revoked
from mlray.serve.routing import TrafficPlan
from mlray.serve.settings import described
from mlray.spec import ProjectSpec, ServeSpec

log = logging.getLogger(__name__)
LONG_POLL_S = 10.0  # a watch with nothing new returns after this long (the replica calls again)
ROLLBACK_TAG = "mlray.rolled_back"
SERVE_STATUS_WAIT_S = 5.0  # how long `settled` waits for Serve's count of ingress replicas
PROJECTION_WAIT_S = 10.0  # how long a change that moved an alias waits for the registry to show it


actor_name = control_plane_name


def running_ingress_replicas(application: str) -> int | None:
    """How many ingress replicas Serve runs for `application` (None: Ray is not running, or no such application)."""
    if not ray.is_initialized():
        return None
    from ray import serve  # Serve's client: only the actor asks it

    found = serve.status().applications.get(application)  # Serve not started: no applications
    ingress = found.deployments.get("ingress") if found is not None else None
    return None if ingress is None else int(ingress.replica_states.get("RUNNING", 0))


def _registry_of(spec: ProjectSpec) -> Callable[[], ModelRegistry]:
    def make() -> ModelRegistry:
        from mlray.registry.models import Registry  # heavy: MLflow; only the control plane actor, not the ingress

        return Registry(spec)

    return make


class ControlPlane:
    """The control plane's state and transitions; every change holds `lock`, commits, audits, then wakes watchers."""

    def __init__(self, spec: ProjectSpec, store: StateStore | None = None, audit: AuditSink | None = None,
                 registry: Callable[[], ModelRegistry] | None = None,
                 running_ingress: Callable[[str], int | None] = running_ingress_replicas):
        self.live = LiveSpec(spec, restarted())  # the spec it runs on: the one handed over last, after a restart too
        self.given = store, audit, registry  # ports passed in (fakes in unit tests); the others follow the spec
        self.running_ingress = running_ingress
        self._connect()
        self.revision, self.state, self.loaded = 0, ServingState(), False
        self.projected = False  # whether the registry's aliases are known to match the state's
        self.projecting: asyncio.Task | None = None
        self.lock, self.loading = asyncio.Lock(), asyncio.Lock()  # one change at a time; one first read
        self.changed = asyncio.Event()  # replaced after every change: watchers wait on the one they saw
        self.replicas: dict[str, dict] = {}  # ingress replica → the revision it has applied, and when it said so
        self.chained: set[str] = set()  # ids of the state's audit entries known to be in the audit chain

    @property
    def spec(self) -> ProjectSpec:
        return self.live.spec

    def _connect(self) -> None:
        """The state table, audit trail and registry of the spec it runs on (unless passed in)."""
        store, audit, registry = self.given
        self.audit = audit or AuditLog(self.spec.platform)
        self.table = store or StateTable(Lake.from_platform(self.spec.platform), SERVING_STATE)
        self.make_registry = registry or _registry_of(self.spec)

    # ------------------------------------------------------------------ reading

    def _reload(self) -> None:
        self.revision, document = self.table.read()
        self.state = read_document(ServingState, SERVING_STATE, self.revision, document or {})
        if self.state.spec is not None and self.live.follow(self.state.spec.model_dump()):
            self._connect()  # e.g. restarted by Ray with the spec it was created with: the one handed over since wins
        self.chained = set()
        if not self.loaded:
            log.info("control plane of %s at revision %d", self.spec.name, self.revision)
        self.loaded = True

    async def _ready(self) -> None:
        """The state, read once (the first call after a start waits for the lake; the constructor does not), its
        audit entries chained if a crash left them out; then the registry's aliases are repaired in the background (a
        registry that is down delays nothing)."""
        if not self.loaded:
            async with self.loading:
                if not self.loaded:
                    await asyncio.to_thread(self._reload)
                    await self._chain(strict=False)
                    self._projection()

    async def snapshot(self) -> dict:
        await self._ready()
        return self.state.model_dump(mode="json", exclude={"request_id_secret", "audit_entries"}) | {"revision": self.revision}

    async def request_id_secret(self) -> str:
        """The project's secret for signing request ids: made once, kept with the state, so ids issued by any
        replica, before or after a restart, are checked by every other."""
        await self._ready()
        async with self.lock:
            if not self.state.request_id_secret:
                await self._commit({"request_id_secret": secrets.token_hex(32)}, [], "control-plane")
            return self.state.request_id_secret

    async def watch(self, known: int, replica: str | None = None, timeout: float = LONG_POLL_S) -> dict:
        """The state once its revision differs from `known` (at once if it does), or after `timeout` as it is."""
        await self._ready()
        if replica is not None:
            self.replicas[replica] = {"revision": known, "seen": time.time()}
        if self.revision == known:
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        return await self.snapshot()

    async def replica_revisions(self) -> dict[str, int]:
        """The revision each live ingress replica has applied (a live one calls `watch` at least every long poll)."""
        cutoff = time.time() - LONG_POLL_S - 2
        self.replicas = {name: r for name, r in self.replicas.items() if r["seen"] >= cutoff}
        return {name: r["revision"] for name, r in self.replicas.items()}

    async def settled(self, revision: int, timeout: float = 30.0) -> bool:
        """Wait until every live ingress replica has applied `revision` (False if one has not within `timeout`). As
        many replicas as Serve runs must have called in: an owner started a moment ago knows none yet, and replicas
        that lost its predecessor call the new one after their back-off."""
        deadline = time.monotonic() + timeout
        running = await self._running_ingress(min(SERVE_STATUS_WAIT_S, timeout)) or 0
        while time.monotonic() < deadline:
            applied = await self.replica_revisions()
            if len(applied) >= running and all(seen >= revision for seen in applied.values()):
                return True
            await asyncio.sleep(0.02)
        return False

    async def _running_ingress(self, wait: float) -> int | None:
        """Serve's count of running ingress replicas, or None when Serve does not say within `wait` seconds (its
        controller restarting waits rather than fails) or answers with an error: the replicas known are waited for."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.running_ingress, self.spec.name), wait)
        except Exception as exc:  # noqa: BLE001 - a change is committed: how long to wait for it is no reason to fail
            log.warning("Serve's replica count of %s unknown (%s): waiting for the replicas known", self.spec.name,
                        type(exc).__name__)
            return None

    async def aliases(self) -> dict[str, str | None]:
        """Who is champion, challenger and previous, as the control plane has it."""
        await self._ready()
        async with self.lock:
            if self.state.aliases is None:
                await self._commit({"aliases": await self._aliases()}, [], "control-plane")
            return self.state.aliases.model_dump()

    # ------------------------------------------------------------------ changing

    async def _commit(self, change: dict, audit: list[dict], writer: str, principal: str | None = None) -> dict:
        """Write the state with `change` and its audit entries as the next revision, then chain the entries, then
        wake the watchers, then project the aliases. A new plan carries where each of its versions' packages lives.
        `principal`: who asked (an entry may name its own); None: this process's."""
        if change.get("plan") is not None and "packages" not in change:
            change = change | {"packages": await self._packages(change["plan"])}
        await self._chain(strict=True)
        entries = [new_entry(**({"principal": principal} | entry)) for entry in audit]
        state = self.state.model_copy(update=change | {"audit_entries": entries})
        try:
            self.revision = await asyncio.to_thread(self.table.write, state.document(), self.revision, writer)
        except StateConflict:  # someone else wrote the table: take theirs, and let the caller decide again
            await asyncio.to_thread(self._reload)
            raise
        self.state, self.chained = state, set()
        await self._chain(strict=False)
        self.changed.set()
        self.changed = asyncio.Event()
        if "aliases" in change or not self.projected:
            projection = self._projection()
            if "aliases" in change:  # the caller moved an alias: the registry shows it on return, unless it is down
                try:
                    await asyncio.wait_for(asyncio.shield(projection), PROJECTION_WAIT_S)
                except asyncio.TimeoutError:
                    log.warning("the registry of %s is slow; its aliases follow the control plane's when it answers",
                                self.spec.name)
        return await self.snapshot()

    async def _chain(self, strict: bool) -> None:
        """The state's audit entries into the chain, each once; a failure raises when `strict` (before a change)."""
        try:
            for entry in self.state.audit_entries:
                if entry["id"] not in self.chained:
                    await asyncio.to_thread(self.audit.record, entry)
                    self.chained.add(entry["id"])
        except Exception as exc:
            if strict:
                raise
            log.warning("the audit entries of revision %d of %s are not chained yet (%s: %s); chained at the next "
                        "change or start", self.revision, self.spec.name, type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "")

    def _projection(self) -> asyncio.Task:
        """The running projection of the aliases, or a new one: one at a time, and it runs until the registry shows the
        latest aliases, so a change committed while it ran is projected too. Never awaited under a lock for longer
        than PROJECTION_WAIT_S: a registry that retries for minutes delays no other change."""
        if self.projecting is None or self.projecting.done():
            self.projecting = asyncio.create_task(self._project())
        return self.projecting

    async def _project(self) -> None:
        """Make the registry's aliases the state's. The state is committed already: a registry that fails here is
        logged and repaired at the next change (or the next start)."""
        projected = None
        while self.state.aliases is not None and self.state.aliases != projected:
            projected = self.state.aliases
            try:
                registry = await self._registry()
                changes = await asyncio.to_thread(registry.project_aliases, projected.model_dump())
            except Exception as exc:  # noqa: BLE001 - MLflow down or refusing: the record stands, the projection waits
                self.projected = False
                log.warning("the registry's aliases of %s lag the control plane (%s: %s); repaired at the next change",
                            self.spec.name, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                return
            if changes:
                log.info("registry aliases of %s set to the control plane's: %s", self.spec.name, "; ".join(changes))
        self.projected = True

    async def _aliases(self) -> Aliases:
        """The state's aliases; a document from before the control plane kept them takes the registry's once."""
        if self.state.aliases is not None:
            return self.state.aliases
        registry = await self._registry()
        found = {name: await asyncio.to_thread(registry.version_of, name) for name in ALIAS_NAMES}
        log.info("control plane of %s takes the registry's aliases as its record: %s", self.spec.name, found)
        return Aliases(**found)

    def _ended_rollout(self, why: str, actor: str) -> tuple[dict, list[dict]]:
        """A change made by hand while a rollout runs stops it (its controller's next step would undo the change)."""
        rollout = self.state.rollout
        if rollout is None or not rollout.active:
            return {}, []
        stopped = rollout.model_copy(update={"status": RolloutStatus.STOPPED, "reason": why})
        entry = {"action": "canary.stop", "target": f"{self.spec.name} v{rollout.challenger}", "reason": why,
                 "component": actor}
        return {"rollout": stopped, "rollout_revision": self.revision + 1}, [entry]

    async def set_plan(self, plan: dict, actor: str, action: str, reason: str, overrides_rollout: bool = True,
                       principal: str | None = None) -> dict:
        """Set the traffic plan. `overrides_rollout`: a running rollout stops (a person took the wheel)."""
        TrafficPlan.from_dict(plan)  # refuse a plan that does not add up
        await self._ready()
        async with self.lock:
            change, audit = self._ended_rollout(f"{action} by {actor}: {reason}", actor) if overrides_rollout else ({}, [])
            audit.append({"action": action, "target": self.spec.name, "reason": reason, "before": self.state.plan,
                          "after": plan, "component": actor})
            return await self._commit(change | {"plan": plan}, audit, actor, principal)

    async def set_keys(self, hashes: list[str], actor: str, principal: str | None = None) -> dict:
        """Replace the accepted key hashes; the change is audited by fingerprint (never the hash or the key)."""
        await self._ready()
        async with self.lock:
            return await self._keys_become(set(hashes), actor, principal)

    async def change_keys(self, add: list[str], revoke: list[str], actor: str, principal: str | None = None) -> dict:
        """Accept the hashes `add`, stop accepting those `revoke` names (a hash or a fingerprint); others stay."""
        await self._ready()
        async with self.lock:
            before = set(self.state.keys or [])
            return await self._keys_become((before | set(add)) - revoked(before, revoke), actor, principal)

    async def _keys_become(self, after: set[str], actor: str, principal: str | None) -> dict:
        before = set(self.state.keys or [])
        if self.state.keys is not None and before == after:
            return await self.snapshot()
        entry = {"action": "keys.change", "target": self.spec.name,
                 "reason": f"{len(after - before)} key(s) added, {len(before - after)} revoked",
                 "before": sorted(fingerprint(h) for h in before), "after": sorted(fingerprint(h) for h in after),
                 "component": actor}
        return await self._commit({"keys": sorted(after)}, [entry], actor, principal)

    async def set_serve(self, settings: dict, actor: str, principal: str | None = None) -> dict:
        """The `serve` section the ingress replicas follow (validated as the spec's); audited with what changed."""
        wanted = ServeSpec.model_validate(settings)
        await self._ready()
        async with self.lock:
            applied = self.state.serve
            if applied == wanted.model_dump(mode="json"):
                return await self.snapshot()
            entry = {"action": "serve.settings", "target": self.spec.name, "reason": described(applied, wanted),
                     "before": applied, "after": wanted.model_dump(mode="json"), "component": actor}
            return await self._commit({"serve": wanted.model_dump(mode="json")}, [entry], actor, principal)

    async def set_spec(self, spec: ProjectSpec, revision: dict, actor: str, principal: str | None = None) -> dict:
        """Run on `spec` (handed over by a deploy or `monitor start`, stored redacted at `revision`'s URI) and hold its
        revision, which the rollout controller and the monitor follow; audited with the sections that changed."""
        wanted = SpecRevision.model_validate(revision)
        await self._ready()
        async with self.lock:
            if self.state.spec == wanted:
                snapshot = await self.snapshot()
            else:
                changed = ", ".join(sections_changed(self.spec, spec)) or "secrets only"
                entry = {"action": "spec.change", "target": self.spec.name, "component": actor,
                         "reason": f"changed: {changed}" if self.state.spec else "first spec held",
                         "before": self.state.spec and self.state.spec.digest, "after": wanted.digest}
                snapshot = await self._commit({"spec": wanted}, [entry], actor, principal)
            if self.live.offer(spec):
                self._connect()
            return snapshot

    async def admit(self, version: str, actor: str, principal: str | None = None) -> str:
        """A version that passed the gate joins: champion when there is none yet, else challenger. Its role."""
        await self._ready()
        async with self.lock:
            before = await self._aliases()
            after = before.admitted(version)
            if after != before or self.state.aliases is None:
                role = after.role_of(version)
                entry = {"action": "alias", "target": f"{self.spec.name}@{role}", "component": actor,
                         "reason": f"v{version} passed the gate", "before": before.model_dump(), "after": after.model_dump()}
                await self._commit({"aliases": after}, [entry], actor, principal)
            return after.role_of(version)

    async def set_alias(self, alias: str, version: str, actor: str, principal: str | None = None) -> dict:
        """Point an alias at a version by hand; a new champion keeps the old one as previous and stops a running
        rollout. Setting it where it is changes nothing."""
        if alias not in ALIAS_NAMES:
            raise UserError(f"alias {alias!r} is not one of {', '.join(ALIAS_NAMES)}")
        await self._ready()
        async with self.lock:
            registry = await self._registry()
            _, version = await asyncio.to_thread(registry.resolve, version)  # a version that exists
            before = await self._aliases()
            if getattr(before, alias) == version and self.state.aliases is not None:
                return await self.snapshot()
            change, audit = self._ended_rollout(f"champion set to v{version} by {actor}", actor) \
                if alias == "champion" else ({}, [])
            audit.append({"action": "alias", "target": f"{self.spec.name}@{alias}",
                          "reason": f"v{getattr(before, alias)} → v{version}", "before": getattr(before, alias),
                          "after": version, "component": actor})
            return await self._commit(change | {"aliases": before.moved(alias, version)}, audit, actor, principal)

    async def rollback_to(self, version: str, actor: str, principal: str | None = None) -> dict:
        """`version` (what the caller read as `previous`) becomes champion with all traffic, the champion it replaces
        becomes previous; a running rollout stops. The caller has made sure `version` is served. Naming the target makes
        a retry harmless: once `version` is champion and takes all traffic, a second call changes nothing (a swap of
        champion and previous would undo the first)."""
        await self._ready()
        async with self.lock:
            aliases = await self._aliases()
            plan = TrafficPlan(version, {version: 1.0}, step="rolled back").to_dict()
            if aliases.champion == version and self.state.plan == plan:
                return await self.snapshot()
            change, audit = self._ended_rollout(f"champion rolled back to v{version} by {actor}", actor)
            audit.append({"action": "rollback", "target": f"{self.spec.name} v{aliases.champion}",
                          "reason": f"champion back to v{version}", "before": self.state.plan, "after": plan,
                          "component": actor})
            return await self._commit(change | {"plan": plan, "aliases": aliases.promoted(version)}, audit, actor,
                                      principal)

    async def update_rollout(self, expected: int, rollout: dict, actor: str, plan: dict | None = None,
                             audit: list[dict] = (), promote: str | None = None, tag: tuple[str, str] | None = None,
                             principal: str | None = None) -> dict:
        """The rollout controller's one way to act: its new state (and plan, and the promotion or the rollback tag),
        only if the rollout is still at `expected` (`rollout_revision`); else StateConflict."""
        await self._ready()
        async with self.lock:
            if self.state.rollout_revision != expected:
                raise StateConflict(f"the rollout changed since revision {expected} (now "
                                    f"{self.state.rollout_revision}, {self.state.rollout and self.state.rollout.status})")
            change: dict[str, Any] = {"rollout": RolloutState.model_validate(rollout), "rollout_revision": self.revision + 1}
            if plan is not None:  # its packages before anything is written: a registry that fails here changes nothing
                change |= {"plan": plan, "packages": await self._packages(plan)}
            if promote is not None:
                change |= {"aliases": (await self._aliases()).promoted(promote)}
            if tag is not None:  # a tag on the version, not a fact the control plane owns; setting it twice is harmless
                registry = await self._registry()
                await asyncio.to_thread(registry.tag_version, tag[0], ROLLBACK_TAG, tag[1])
            entries = [{"component": actor} | entry for entry in audit]
            return await self._commit(change, entries, actor, principal)

    async def _packages(self, plan: dict) -> dict[str, str]:
        """{version: package URI} for the versions `plan` serves; the registry is asked only for new ones."""
        known, served = self.state.packages, TrafficPlan.from_dict(plan).versions
        missing = sorted(served - set(known))
        if missing:
            registry = await self._registry()
            for version in missing:
                known = known | {version: await asyncio.to_thread(registry.artifact_uri, registry.model_name, version)}
        return {version: known[version] for version in sorted(served)}

    async def _registry(self) -> ModelRegistry:
        return await asyncio.to_thread(self.make_registry)


# the actor keeps the class's name, `ControlPlane`, on the dashboard and in `ray list actors`
ControlPlaneActor = ray.remote(num_cpus=0, max_restarts=-1)(ControlPlane)


def owner(spec: ProjectSpec):
    """The project's control-plane actor: found if it runs, else started (detached; it restarts by itself)."""
    return detached(ControlPlaneActor, actor_name(spec), spec)


def client(spec: ProjectSpec, attempts: int = 3) -> ControlPlaneClient:
    return ControlPlaneClient(spec, attempts)


class ControlPlaneClient:
    """The project's control plane, called and waited for. An owner that died under a call is found (or started)
    again and called again. That is safe: setting a plan, keys or an alias twice changes nothing more, admitting a
    version twice gives it the same role, a rollback names its target (done once, it is a no-op), and a rollout
    change that had landed is refused the second time by its revision check. Every change carries the principal of
    this process (its OS user and host, or its Ray job), for the audit entry."""

    def __init__(self, spec: ProjectSpec, attempts: int = 3):
        self.spec, self.attempts = spec, attempts

    def snapshot(self) -> dict:
        return self._call(ControlPlane.snapshot)

    def aliases(self) -> dict[str, str | None]:
        return self._call(ControlPlane.aliases)

    def replica_revisions(self) -> dict[str, int]:
        return self._call(ControlPlane.replica_revisions)

    def settled(self, revision: int, timeout: float = 30.0) -> bool:
        return self._call(ControlPlane.settled, revision, timeout)

    def set_plan(self, plan: dict, actor: str, action: str, reason: str, overrides_rollout: bool = True) -> dict:
        return self._call(ControlPlane.set_plan, plan, actor, action, reason, overrides_rollout, principal=current_principal())

    def set_keys(self, hashes: list[str], actor: str) -> dict:
        return self._call(ControlPlane.set_keys, hashes, actor, principal=current_principal())

    def change_keys(self, add: list[str], revoke: list[str], actor: str) -> dict:
        return self._call(ControlPlane.change_keys, add, revoke, actor, principal=current_principal())

    def set_serve(self, settings: dict, actor: str) -> dict:
        return self._call(ControlPlane.set_serve, settings, actor, principal=current_principal())

    def hand_over_spec(self, actor: str) -> dict:
        """This client's spec becomes the one the loops run on: stored redacted under the lake root, then held."""
        revision = {"digest": spec_digest(self.spec), "uri": store_spec(Lake.from_platform(self.spec.platform), self.spec)}
        return self._call(ControlPlane.set_spec, self.spec, revision, actor, principal=current_principal())

    def admit(self, version: str, actor: str) -> str:
        return self._call(ControlPlane.admit, version, actor, principal=current_principal())

    def set_alias(self, alias: str, version: str, actor: str) -> dict:
        return self._call(ControlPlane.set_alias, alias, version, actor, principal=current_principal())

    def rollback_to(self, version: str, actor: str) -> dict:
        return self._call(ControlPlane.rollback_to, version, actor, principal=current_principal())

    def update_rollout(self, expected: int, rollout: dict, actor: str, plan: dict | None = None,
                       audit: list[dict] = (), promote: str | None = None, tag: tuple[str, str] | None = None) -> dict:
        return self._call(ControlPlane.update_rollout, expected, rollout, actor, plan, list(audit), promote, tag,
                          principal=current_principal())

    def _call(self, method: Callable, *args, **kwargs):
        return answer_retried(lambda: getattr(owner(self.spec), method.__name__).remote(*args, **kwargs),
                              f"the control plane of {self.spec.name}", self.attempts)
