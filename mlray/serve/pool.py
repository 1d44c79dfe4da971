"""Model pools: how the ingress reaches the plan's model versions. Both answer `prepare`, `score` and `info`.

- `InProcessPool` (serve.model_placement: ingress): the versions load inside the ingress replica, one
  hop less. A version is loaded before the plan that names it takes effect, and stays loaded
  `RETIRE_S` after it leaves the plan, so calls already routed (or shadowed) to it finish.
- `HandlePool` (serve.model_placement: replicas): each version is its own Serve application, reached
  through a `DeploymentHandle`; its own resources, GPUs included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ray import serve
from ray.exceptions import RayActorError

from mlray.registry.manifest import PackageTampered
from mlray.serve.model_server import LoadedVersion, raise_failed
from mlray.serve.schema import request_columns, request_schema
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)
RETIRE_S = 30.0


def model_app_name(project: str, version: str) -> str:
    return f"{project}-model-{version}"


class InProcessPool:
    def __init__(self, spec: ProjectSpec):
        self.spec, self.schema = spec, request_schema(spec.train_table, request_columns(spec)[0])
        self.loaded: dict[str, tuple[LoadedVersion, Any]] = {}  # version → (model, its batched scorer)
        self.retired: dict[str, float] = {}  # version → when it left the plan

    async def prepare(self, versions: set[str], packages: dict[str, str]) -> None:
        """Load what `versions` needs and this replica lacks, from where `packages` says each lives; unload what left
        the plan RETIRE_S ago."""
        self._prune(versions)
        missing = versions - set(self.loaded)
        if missing:
            await asyncio.to_thread(self._load, missing, packages)

    def _load(self, versions: set[str], packages: dict[str, str]) -> None:
        for version in sorted(versions):
            model = self._load_version(version, packages.get(version))
            self.loaded[version] = (model, model.batched(self.spec.serve.batching))

    def _load_version(self, version: str, uri: str | None) -> LoadedVersion:
        """Straight from the artifact store where the control plane recorded the package (pinned to its manifest's
        digest): no registry call, so a replica starts while MLflow is down. A package that no longer loads from there
        (artifacts moved) and a state written before the control plane kept `packages` (or their digests) are
        resolved in the registry; a package that does not match its manifest is refused, not retried."""
        if uri:
            try:
                return LoadedVersion(self.spec.platform, uri, version, self.schema)
            except PackageTampered:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure to load from the recorded place: ask the registry
                log.warning("version %s did not load from %s (%s: %s); asking the registry where it lives", version,
                            uri, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return LoadedVersion(self.spec.platform, self._resolve(version), version, self.schema)

    def _resolve(self, version: str) -> str:
        from mlray.registry.models import Registry  # heavy: MLflow; only a version the recorded package cannot load asks it

        registry = Registry(self.spec)
        return registry.artifact_uri(*registry.resolve(version))

    def _prune(self, served: set[str]) -> None:
        now = time.monotonic()
        for version in list(self.loaded):
            if version in served:
                self.retired.pop(version, None)
            elif now - self.retired.setdefault(version, now) > RETIRE_S:
                del self.loaded[version], self.retired[version]

    async def score(self, version: str, rows: list[dict]) -> list[dict]:
        return raise_failed(await self.loaded[version][1](rows))

    async def info(self, version: str) -> dict:
        return self.loaded[version][0].info()


class HandlePool:
    def __init__(self, spec: ProjectSpec):
        self.spec = spec
        self.handles: dict[str, Any] = {}

    async def prepare(self, versions: set[str], packages: dict[str, str]) -> None:
        """Nothing to load: `mlray deploy` started each version's application before the plan named it."""

    def _handle(self, version: str):
        if version not in self.handles:
            self.handles[version] = serve.get_deployment_handle("model", model_app_name(self.spec.name, version),
                                                                _check_exists=False)
        return self.handles[version]

    async def score(self, version: str, rows: list[dict]) -> list[dict]:
        """One model call. Scoring is pure, so a call whose replica died under it (a crash, a node lost, a replica
        replaced) runs once more: Serve routes it to a live or a replacement replica."""
        try:
            result = await self._handle(version).predict.remote(rows)
        except RayActorError as exc:
            log.warning("model version %s lost a replica mid-call (%s); calling again", version, type(exc).__name__)
            result = await self._handle(version).predict.remote(rows)
        return raise_failed(result)

    async def info(self, version: str) -> dict:
        return await self._handle(version).info.remote()
