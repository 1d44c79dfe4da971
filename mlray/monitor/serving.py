"""The monitor's `ServingView`: the control plane's committed state, read from its `serving_state` table under the
lake root (no call to the control plane's actor, so the monitor checks windows while it is down)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from mlray.control.retry import backoff
from mlray.lake import Lake
from mlray.lake.state import SERVING_STATE, StateTable
from mlray.runtime import NAMESPACE, control_plane_name
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)


def champion_of(state: dict, registry: Callable[[], object]) -> str | None:
    """The champion of the control plane's state: the committed plan's (no registry call, so windows are checked while
    MLflow is down), else its record of the aliases, else (a state from before it kept them) the registry's alias."""
    if state.get("plan"):
        return state["plan"]["champion"]
    recorded = state.get("aliases")
    return recorded["champion"] if recorded else registry().version_of("champion")


class ServingTable:
    """Who is champion and which rollout runs, as the control plane last committed them."""

    def __init__(self, spec: ProjectSpec, lake: Lake):
        self.spec, self.table = spec, StateTable(lake, SERVING_STATE)
        self._registry = None

    def _document(self) -> dict:
        return self.table.read()[1] or {}

    def champion(self) -> str | None:
        return champion_of(self._document(), self.registry)

    def rollout(self) -> dict | None:
        return self._document().get("rollout")

    def spec_revision(self) -> dict | None:
        return self._document().get("spec")

    def registry(self):
        from mlray.registry.models import Registry  # MLflow: imported only when nothing is served yet

        if self._registry is None:
            self._registry = Registry(self.spec)
        return self._registry


class PushedServing:
    """The control plane's state as its long poll pushes it (the `watch` the ingress replicas follow), so a new
    champion or rollout reaches the monitor when it is committed. Until the first push, and while the control plane
    is unreachable, the committed table answers (`fallback`). The monitor never starts the control plane: serving
    is not its to own."""

    def __init__(self, spec: ProjectSpec, fallback: ServingTable, owner: Callable[[], Any] | None = None):
        self.spec, self.fallback = spec, fallback
        self.owner = owner or self._find_owner  # the control plane's actor handle (a fake in unit tests)
        self.state: dict | None = None

    def _find_owner(self):
        import ray  # Ray: only the real owner lookup needs it; the monitor's loop (mlray.monitor.watch) stays Ray-free

        return ray.get_actor(control_plane_name(self.spec), namespace=NAMESPACE)

    def champion(self) -> str | None:
        return self.fallback.champion() if self.state is None else champion_of(self.state, self.fallback.registry)

    def rollout(self) -> dict | None:
        return self.fallback.rollout() if self.state is None else self.state.get("rollout")

    def spec_revision(self) -> dict | None:
        """The spec revision the control plane holds ({digest, uri}), or None."""
        return self.fallback.spec_revision() if self.state is None else self.state.get("spec")

    def use(self, spec: ProjectSpec) -> None:
        """Follow on `spec` (a new revision: its lake credentials and registry for the table read meanwhile)."""
        self.spec, self.fallback = spec, ServingTable(spec, Lake.from_platform(spec.platform))

    async def follow(self) -> None:
        """Long-poll the control plane for ever; a missing or restarting one is looked up again after a backoff."""
        failures, revision = 0, -1
        while True:
            try:
                self.state = await self.owner().watch.remote(revision)
                revision, failures = self.state["revision"], 0
            except Exception as exc:  # noqa: BLE001 - not started yet, restarting, or its node lost: ask again later
                self.state, failures = None, failures + 1
                if failures == 1:
                    log.info("no push from the control plane of %s (%s); reading its table meanwhile", self.spec.name,
                             type(exc).__name__)
                await asyncio.sleep(backoff(failures, first=1.0, cap=30.0))
