"""The HTTP front door: API keys, size limits, validation, routing between versions, shadow, logging.

One FastAPI app on one Serve deployment (its replicas share nothing but the traffic table and
the lake). Each model version is its own Serve application (`model_app_name`), reached through a
`DeploymentHandle`, so adding or removing a version never restarts the ingress.
"""

import asyncio
import logging
import time
import uuid
from typing import Any

import ray
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.config import BackpressureConfig
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from mlray.serve import auth
from mlray.serve.auth import KeyRing
from mlray.serve.limits import BodyLimit
from mlray.serve.logbook import InferenceLog, append_label, score_of
from mlray.serve.model_server import LoadedVersion, autoscaling_config
from mlray.serve.routing import TrafficPlan
from mlray.serve.schema import Feedback, request_model, row_model, rows_table
from mlray.serve.traffic import NAMESPACE, POLL_S, actor_name
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)
RETIRE_S = 30.0  # a version loaded in the ingress stays this long after it leaves the plan


def model_app_name(project: str, version: str) -> str:
    return f"{project}-model-{version}"


def input_columns(spec: ProjectSpec) -> list[str]:
    """What a request row may carry: every column of the train table but the label."""
    return [c for c in spec.train_table.columns if c != spec.data.label_column]


def _versions_of(plan: TrafficPlan) -> set[str]:
    return set(plan.weights) | ({plan.shadow} if plan.shadow else set())


def ingress_scaling(serve_spec, local: bool) -> dict:
    """A fixed number of ingress replicas; with the models inside the ingress, the spec's autoscaling."""
    if not local:
        return {"num_replicas": serve_spec.ingress_replicas}
    return {"autoscaling_config": autoscaling_config(serve_spec.autoscaling, at_least=1)}


def build_ingress(spec: ProjectSpec, local: bool):
    """The ingress deployment for this project (its request model is generated from the data schema); `local`:
    the model versions load inside it (serve.model_placement: ingress)."""
    serve_spec, table = spec.serve, spec.train_table
    columns = input_columns(spec)
    Row = row_model(table, columns)
    PredictRequest = request_model(Row, serve_spec.max_rows_per_request)
    keys = KeyRing.for_serving(serve_spec)  # until the first read of the traffic table's keys
    api = FastAPI(title=f"mlray: {spec.name}", version="1",
                  description="Predictions from the registered model versions of this project.")
    api.add_middleware(BodyLimit, limit=serve_spec.max_body_bytes)

    def authorized(request: Request) -> None:
        if serve_spec.auth and not auth.live(spec.name, keys).accepts(request.headers.get("authorization")):
            raise HTTPException(401, "a valid API key is required (Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})

    @serve.deployment(name="ingress", **ingress_scaling(serve_spec, local),
                      ray_actor_options={"num_cpus": serve_spec.ingress_cpus},
                      max_ongoing_requests=serve_spec.ingress_max_ongoing,
                      max_queued_requests=serve_spec.max_queued_requests,
                      backpressure_config=BackpressureConfig(status_code=503, retry_after_s=serve_spec.retry_after_s))
    @serve.ingress(api)
    class Ingress:
        async def __init__(self):
            from mlray import dataplane

            self.lake = dataplane.lake_of(spec)
            self.log = InferenceLog(self.lake, serve_spec.inference_log_table)
            self.traffic = ray.get_actor(actor_name(spec.name), namespace=NAMESPACE)
            self.revision, self.plan = -1, None
            self.handles: dict[str, Any] = {}
            self.loaded: dict[str, tuple[LoadedVersion, Any]] = {}  # model_placement: ingress
            self.retired: dict[str, float] = {}  # version → when it left the plan
            await self._refresh()
            self.tasks = [asyncio.create_task(self._every(POLL_S, self._refresh)),
                          asyncio.create_task(self._every(serve_spec.log_flush_s, self._flush))]

        async def _every(self, seconds: float, job) -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    await job()
                except Exception:  # a background job must survive a bad moment
                    log.exception("ingress background job failed")

        async def _refresh(self) -> None:
            if local:
                self._prune()
            revision, plan, hashes = await self.traffic.snapshot.remote()
            if revision != self.revision:
                if hashes is not None:
                    auth.publish(spec.name, KeyRing(hashes, environ={}))
                if plan is None:
                    return
                plan = TrafficPlan.from_dict(plan)
                if local:  # the plan's versions are loaded before it takes effect: no request waits on a load
                    await asyncio.to_thread(self._load, _versions_of(plan))
                self.plan, self.revision = plan, revision
                from mlray.metrics import serving

                for version, weight in self.plan.weights.items():
                    serving()["weight"].set(weight, tags={"model_version": version})

        async def _flush(self) -> None:
            await asyncio.to_thread(self.log.flush)

        def _handle(self, version: str):
            if version not in self.handles:
                self.handles[version] = serve.get_deployment_handle(
                    "model", model_app_name(spec.name, version), _check_exists=False)
            return self.handles[version]

        def _load(self, versions: set[str]) -> None:
            """Load the versions this process lacks (model_placement: ingress)."""
            from mlray.registry.models import Registry

            missing = versions - set(self.loaded)
            if missing:
                registry = Registry(spec)
                for version in sorted(missing):
                    model = LoadedVersion(spec.platform, registry.artifact_uri(*registry.resolve(version)), version)
                    self.loaded[version] = (model, model.batched(serve_spec.batching))

        def _prune(self) -> None:
            """Unload versions out of the plan for RETIRE_S (calls routed, or shadowed, just before finish first)."""
            served, now = self._served(), time.monotonic()
            for version in list(self.loaded):
                if version in served:
                    self.retired.pop(version, None)
                elif now - self.retired.setdefault(version, now) > RETIRE_S:
                    del self.loaded[version], self.retired[version]

        async def _score(self, version: str, inputs) -> list[dict]:
            """One model call. Scoring is pure, so a call whose replica died under it (a crash, a node lost, a
            replica replaced) runs once more: Serve routes it to a live or a replacement replica."""
            if local:
                return await self.loaded[version][1](inputs)
            try:
                return await self._handle(version).predict.remote(inputs)
            except RayActorError as exc:
                log.warning("model version %s lost a replica mid-call (%s); calling again", version,
                            type(exc).__name__)
                return await self._handle(version).predict.remote(inputs)

        def _served(self) -> set[str]:
            return _versions_of(self.plan) if self.plan else set()

        async def _info(self, version: str) -> dict:
            return self.loaded[version][0].info() if local else await self._handle(version).info.remote()

        @api.get("/v1/health")
        async def health(self) -> dict:
            ready = self.plan is not None
            return {"status": "ok" if ready else "starting", "champion": self.plan.champion if ready else None}

        @api.get("/v1/models", dependencies=[Depends(authorized)])
        async def models(self) -> dict:
            infos = await asyncio.gather(*(self._info(v) for v in sorted(self._served())))
            return {"rollout": self.plan.to_dict() if self.plan else None,
                    "versions": [info | {"weight": self.plan.weights.get(info["version"], 0.0)} for info in infos]}

        @api.post("/v1/predict", dependencies=[Depends(authorized)])
        async def predict(self, body: PredictRequest, request: Request):  # type: ignore[valid-type]
            from mlray.metrics import serving

            if self.plan is None:
                raise HTTPException(503, "no model is deployed yet", headers={"Retry-After": "1"})
            request_id = uuid.uuid4().hex
            sticky = request.headers.get(serve_spec.sticky_header)
            pinned = request.headers.get(serve_spec.pin_header)
            if pinned is not None and pinned not in self._served():
                raise HTTPException(400, f"version {pinned!r} is not served (served: {sorted(self._served())})")
            version = pinned or self.plan.pick(sticky)
            rows = body.all_rows()
            inputs = rows_table(rows, table, columns)
            mirror = self.plan.mirror() if pinned is None else None
            if mirror and mirror != version:
                asyncio.create_task(self._shadow(mirror, inputs, rows, request_id, sticky))
            started = time.perf_counter()
            try:
                predictions = await self._score(version, inputs)
            except (BackPressureError, DeploymentUnavailableError):
                serving()["requests"].inc(tags={"model_version": version, "outcome": "overloaded"})
                raise HTTPException(503, f"model version {version} is at capacity: retry later",
                                    headers={"Retry-After": str(serve_spec.retry_after_s)}) from None
            except Exception as exc:
                latency = (time.perf_counter() - started) * 1000
                self.log.record(request_id, version, rows, None, latency, sticky_key=sticky, error=type(exc).__name__)
                serving()["requests"].inc(tags={"model_version": version, "outcome": "error"})
                log.error("model version %s failed on request %s: %s", version, request_id, type(exc).__name__)
                return JSONResponse({"detail": "the model failed on this request", "request_id": request_id,
                                     "model_version": version}, status_code=500)
            latency = (time.perf_counter() - started) * 1000
            self.log.record(request_id, version, rows, predictions, latency, sticky_key=sticky)
            metrics = serving()
            metrics["requests"].inc(tags={"model_version": version, "outcome": "ok"})
            metrics["latency"].observe(latency / 1000, tags={"model_version": version})
            for prediction in predictions:
                score = score_of(prediction)
                if score is not None:
                    metrics["score"].observe(score, tags={"model_version": version})
            return {"request_id": request_id, "model_version": version,
                    "feature_version": predictions[0].get("feature_version") if predictions else None,
                    "predictions": [{k: v for k, v in p.items() if k != "feature_version"} for p in predictions]}

        async def _shadow(self, version: str, inputs, rows: list[dict], request_id: str, sticky: str | None) -> None:
            started = time.perf_counter()
            try:
                predictions = await self._score(version, inputs)
                error = None
            except Exception as exc:  # a shadow's failure never reaches the caller; it is recorded
                predictions, error = None, type(exc).__name__
            self.log.record(request_id, version, rows, predictions, (time.perf_counter() - started) * 1000,
                            shadow=True, sticky_key=sticky, error=error)

        @api.post("/v1/feedback", dependencies=[Depends(authorized)])
        async def feedback(self, body: Feedback) -> dict:
            stored = await asyncio.to_thread(append_label, self.lake, serve_spec.labels_table, body.request_id,
                                             body.row, body.label)
            return {"request_id": body.request_id, "row": body.row, "stored": stored}

        def __del__(self):
            self.log.flush()  # what is still buffered when the replica stops

    return Ingress
