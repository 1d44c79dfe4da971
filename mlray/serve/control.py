"""The control plane: one owner per project of who serves what.

`ControlPlane` is a named, detached Ray actor that restarts by itself. It alone writes the serving
plan, the accepted API-key hashes, the rollout's state and (after registration) the
champion/challenger/previous aliases, and it writes the audit entry of every change. Its state is a
`StateTable` under the lake root, written with a compare-and-swap, so a restart on any node finds
it. Ingress replicas long-poll it (`watch`): a change reaches them as soon as it is committed.

Callers pass it what it needs (keys included): it never reads its own environment. Its constructor does no I/O:
a restart while the lake is unreachable succeeds, and the state is read at the first call.

With every plan it keeps where each served version's package lives (`packages`, resolved in the registry when a
version first enters the plan), so an ingress replica started while MLflow is down still loads its models.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import ray

from mlray.audit import AuditLog
from mlray.control.state import ROLLOUT_ACTIVE, RolloutStatus
from mlray.lake.state import SERVING_STATE, StateConflict, StateTable
from mlray.runtime import NAMESPACE
from mlray.serve.auth import fingerprint
from mlray.serve.routing import TrafficPlan
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)
LONG_POLL_S = 10.0  # a watch with nothing new returns after this long (the replica calls again)
ROLLBACK_TAG = "mlray.rolled_back"
SECRET = "request_id_secret"  # signs request ids (`mlray.serve.request_ids`); only ingress replicas are given it


def actor_name(project: str) -> str:
    return f"{project}-control"


def _active(rollout: dict | None) -> bool:
    return rollout is not None and rollout.get("status") in ROLLOUT_ACTIVE


@ray.remote(num_cpus=0, max_restarts=-1)
class ControlPlane:
    def __init__(self, spec: ProjectSpec):
        from mlray.lake import Lake

        self.spec = spec
        self.audit = AuditLog(spec.platform)
        self.table = StateTable(Lake.from_platform(spec.platform), SERVING_STATE)
        self.revision, self.doc, self.loaded = 0, {}, False
        self.lock, self.loading = asyncio.Lock(), asyncio.Lock()  # one change at a time; one first read
        self.changed = asyncio.Event()  # replaced after every change: watchers wait on the one they saw
        self.replicas: dict[str, dict] = {}  # ingress replica → the revision it has applied, and when it said so

    # ------------------------------------------------------------------ reading

    def _reload(self) -> None:
        self.revision, doc = self.table.read()
        self.doc = {"plan": None, "keys": None, "rollout": None, "rollout_revision": 0, "packages": {}} | (doc or {})
        if not self.loaded:
            log.info("control plane of %s at revision %d", self.spec.name, self.revision)
        self.loaded = True

    async def _ready(self) -> None:
        """The state, read once (the first call after a start waits for the lake; the constructor does not)."""
        if not self.loaded:
            async with self.loading:
                if not self.loaded:
                    await asyncio.to_thread(self._reload)

    async def snapshot(self) -> dict:
        await self._ready()
        return {k: v for k, v in self.doc.items() if k != SECRET} | {"revision": self.revision}

    async def request_id_secret(self) -> str:
        """The project's secret for signing request ids: made once, kept with the state, so ids issued by any
        replica, before or after a restart, are checked by every other."""
        await self._ready()
        async with self.lock:
            if not self.doc.get(SECRET):
                await self._commit({SECRET: secrets.token_hex(32)}, [], "control-plane")
            return self.doc[SECRET]

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
        """Wait until every live ingress replica has applied `revision` (False if one has not within `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(applied >= revision for applied in (await self.replica_revisions()).values()):
                return True
            await asyncio.sleep(0.02)
        return False

    # ------------------------------------------------------------------ changing

    async def _commit(self, change: dict, audit: list[dict], writer: str) -> dict:
        """Write `doc | change` as the next revision, then the audit entries, then wake the watchers. A new plan
        carries where each of its versions' packages lives."""
        if change.get("plan") is not None and "packages" not in change:
            change = change | {"packages": await self._packages(change["plan"])}
        doc = self.doc | change
        try:
            self.revision = await asyncio.to_thread(self.table.write, doc, self.revision, writer)
        except StateConflict:  # someone else wrote the table: take theirs, and let the caller decide again
            await asyncio.to_thread(self._reload)
            raise
        self.doc = doc
        for entry in audit:
            await asyncio.to_thread(self.audit.append, **entry)
        self.changed.set()
        self.changed = asyncio.Event()
        return await self.snapshot()

    def _ended_rollout(self, why: str, actor: str) -> tuple[dict, list[dict]]:
        """A change made by hand while a rollout runs stops it (its controller's next step would undo the change)."""
        rollout = self.doc["rollout"]
        if not _active(rollout):
            return {}, []
        stopped = rollout | {"status": RolloutStatus.STOPPED, "reason": why}
        entry = {"action": "canary.stop", "target": f"{self.spec.name} v{rollout['challenger']}", "reason": why,
                 "actor": actor}
        return {"rollout": stopped, "rollout_revision": self.revision + 1}, [entry]

    async def set_plan(self, plan: dict, actor: str, action: str, reason: str, overrides_rollout: bool = True) -> dict:
        """Set the traffic plan. `overrides_rollout`: a running rollout stops (a person took the wheel)."""
        TrafficPlan.from_dict(plan)  # refuse a plan that does not add up
        await self._ready()
        async with self.lock:
            change, audit = self._ended_rollout(f"{action} by {actor}: {reason}", actor) if overrides_rollout else ({}, [])
            audit.append({"action": action, "target": self.spec.name, "reason": reason, "before": self.doc["plan"],
                          "after": plan, "actor": actor})
            return await self._commit(change | {"plan": plan}, audit, actor)

    async def set_keys(self, hashes: list[str], actor: str) -> dict:
        """Replace the accepted key hashes; the change is audited by fingerprint (never the hash or the key)."""
        await self._ready()
        async with self.lock:
            before, after = set(self.doc["keys"] or []), set(hashes)
            if self.doc["keys"] is not None and before == after:
                return await self.snapshot()
            entry = {"action": "keys.change", "target": self.spec.name,
                     "reason": f"{len(after - before)} key(s) added, {len(before - after)} revoked",
                     "before": sorted(fingerprint(h) for h in before), "after": sorted(fingerprint(h) for h in after),
                     "actor": actor}
            return await self._commit({"keys": sorted(after)}, [entry], actor)

    async def set_alias(self, alias: str, version: str, actor: str) -> dict:
        """Point an alias at a version; a new champion keeps the old one as previous and stops a running rollout.
        An unknown alias is refused by `Registry.set_alias`."""
        await self._ready()
        async with self.lock:
            registry = await self._registry()
            before = await asyncio.to_thread(registry.version_of, alias)
            change, audit = self._ended_rollout(f"champion set to v{version} by {actor}", actor) \
                if alias == "champion" and before != version else ({}, [])
            move = registry.promote if alias == "champion" else (lambda v: registry.set_alias(alias, v))
            await asyncio.to_thread(move, version)
            audit.append({"action": "alias", "target": f"{self.spec.name}@{alias}", "reason": f"v{before} → v{version}",
                          "before": before, "after": version, "actor": actor})
            return await self._commit(change, audit, actor)

    async def rollback_to(self, version: str, actor: str) -> dict:
        """`version` (what the caller read as `previous`) becomes champion with all traffic, the champion it replaces
        becomes previous; a running rollout stops. The caller has made sure `version` is served. Naming the target makes
        a retry harmless: once `version` is champion and takes all traffic, a second call changes nothing (a swap of
        champion and previous would undo the first)."""
        await self._ready()
        async with self.lock:
            registry = await self._registry()
            champion = await asyncio.to_thread(registry.version_of, "champion")
            plan = TrafficPlan(version, {version: 1.0}, step="rolled back").to_dict()
            if champion == version and self.doc["plan"] == plan:
                return await self.snapshot()
            change, audit = self._ended_rollout(f"champion rolled back to v{version} by {actor}", actor)
            packages = await self._packages(plan)  # before the alias moves: a registry that fails here moves nothing
            if champion != version:
                await asyncio.to_thread(registry.promote, version)  # the old champion becomes previous
            audit.append({"action": "rollback", "target": f"{self.spec.name} v{champion}",
                          "reason": f"champion back to v{version}", "before": self.doc["plan"], "after": plan,
                          "actor": actor})
            return await self._commit(change | {"plan": plan, "packages": packages}, audit, actor)

    async def update_rollout(self, expected: int, rollout: dict, actor: str, plan: dict | None = None,
                             audit: list[dict] = (), promote: str | None = None, tag: tuple[str, str] | None = None) -> dict:
        """The rollout controller's one way to act: its new state (and plan, and the promotion or the rollback tag),
        only if the rollout is still at `expected` (`rollout_revision`); else StateConflict."""
        await self._ready()
        async with self.lock:
            if self.doc["rollout_revision"] != expected:
                raise StateConflict(f"the rollout changed since revision {expected} (now "
                                    f"{self.doc['rollout_revision']}, {(self.doc['rollout'] or {}).get('status')})")
            change: dict[str, Any] = {"rollout": rollout, "rollout_revision": self.revision + 1}
            if plan is not None:  # its packages first: a registry that fails here moves no alias
                change |= {"plan": plan, "packages": await self._packages(plan)}
            if promote is not None or tag is not None:
                registry = await self._registry()
                if promote is not None:
                    await asyncio.to_thread(registry.promote, promote)
                if tag is not None:
                    await asyncio.to_thread(registry.client.set_model_version_tag, registry.model_name, tag[0],
                                            ROLLBACK_TAG, tag[1])
            entries = [{"actor": actor} | entry for entry in audit]
            return await self._commit(change, entries, actor)

    async def _packages(self, plan: dict) -> dict[str, str]:
        """{version: package URI} for the versions `plan` serves; the registry is asked only for new ones."""
        known, served = self.doc.get("packages") or {}, TrafficPlan.from_dict(plan).versions
        missing = sorted(served - set(known))
        if missing:
            registry = await self._registry()
            for version in missing:
                known = known | {version: await asyncio.to_thread(registry.artifact_uri, registry.model_name, version)}
        return {version: known[version] for version in sorted(served)}

    async def _registry(self):
        from mlray.registry.models import Registry

        return await asyncio.to_thread(Registry, self.spec)


def owner(spec: ProjectSpec):
    """The project's control-plane actor: found if it runs, else started (detached; it restarts by itself)."""
    return ControlPlane.options(name=actor_name(spec.name), namespace=NAMESPACE, lifetime="detached",
                                get_if_exists=True).remote(spec)


def call(spec: ProjectSpec, method: str, *args, attempts: int = 3, **kwargs):
    """Call the owner and wait; an owner that died under the call is found (or started) again and called again.
    That is safe: setting a plan, keys or an alias twice changes nothing more, a rollback names its target (done
    once, it is a no-op), and a rollout change that had landed is refused the second time by its revision check."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError

    for attempt in range(attempts):
        try:
            return ray.get(getattr(owner(spec), method).remote(*args, **kwargs))
        except (ActorDiedError, ActorUnavailableError):
            if attempt == attempts - 1:
                raise
            log.warning("the control plane of %s was unavailable; calling again", spec.name)
            time.sleep(1.0 + attempt)
