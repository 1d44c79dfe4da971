"""The HTTP front door: API keys, size limits, validation, routing between versions, shadow, logging.

`Ingress` is one Serve deployment per project, built with `ingress_app(spec)`. Its replicas share
nothing but the control plane and the lake: each follows the control plane's state (a long poll,
so a new plan or key set applies as soon as it is committed), routes with the plan
(`routing.TrafficPlan`) and scores through a model pool (`pool`), in process or over handles.
"""


import asyncio
import itertools
import json
import logging
import secrets
import time
from collections.abc import Iterator

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError, RaySystemError
from ray.serve.config import BackpressureConfig
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from mlray.registry.scores import score_of
from mlray.serve import control
from mlray.serve.auth import KeyRing
from mlray.serve.limits import BodyLimit
from mlray.serve.logbook import InferenceLog, LabelLog, create_tables, log_schema
from mlray.serve.model_server import autoscaling_config
from mlray.serve.pool import HandlePool, InProcessPool
from mlray.serve.routing import TrafficPlan
from mlray.serve.schema import Feedback, request_columns, request_model, row_model
from mlray.serve.tally import Tally
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)

api = FastAPI(title="mlray", version="1", description="Predictions from the registered model versions of a project.")
api.add_middleware(BodyLimit, limit=lambda: api.state.max_body_bytes)
api.state.max_body_bytes = 1_048_576  # each replica sets its spec's limit


def ingress_scaling(serve_spec, local: bool) -> dict:
    """A fixed number of ingress replicas; with the models inside the ingress, the spec's autoscaling."""
    if not local:
        return {"num_replicas": serve_spec.ingress_replicas}
    return {"autoscaling_config": autoscaling_config(serve_spec.autoscaling, at_least=1)}


def request_ids() -> Iterator[str]:
    """Unique request ids, cheaply: a random 80-bit prefix per replica and a counter (32 hex digits, like a UUID).
    Defined above `Ingress`: Serve captures what the class refers to when it is declared."""
    prefix = secrets.token_hex(10)
    return (f"{prefix}{n:012x}" for n in itertools.count())


@serve.deployment(name="ingress")
@serve.ingress(api)
class Ingress:
    async def __init__(self, spec: ProjectSpec, local: bool):
        from mlray import dataplane

        self.spec, serve_spec = spec, spec.serve
        api.title, api.state.max_body_bytes = f"mlray: {spec.name}", serve_spec.max_body_bytes
        self.columns, required = request_columns(spec)
        self.request_model = request_model(row_model(spec.train_table, self.columns, required),
                                           serve_spec.max_rows_per_request)
        self.lake = dataplane.lake_of(spec)
        await asyncio.to_thread(create_tables, spec, self.lake)  # another schema fails here, not at every flush
        self.log = InferenceLog(self.lake, serve_spec.inference_log_table, log_schema(spec))
        self.labels = LabelLog(self.lake, serve_spec.labels_table)
        self.pool = InProcessPool(spec) if local else HandlePool(spec)
        self.tally = Tally()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.request_ids = request_ids()
        self.revision, self.plan, self.keys = -1, None, KeyRing([], environ={})
        self.owner = control.owner(spec)
        await self._apply(await self.owner.watch.remote(-1, self.replica))
        self.tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._flush_every(serve_spec.log_flush_s))]

    # ------------------------------------------------------------------ following the control plane

    async def _follow(self) -> None:
        """Long-poll the control plane; when it is gone (restarting, or killed), find or start it again."""
        while True:
            try:
                if self.owner is None:
                    self.owner = await asyncio.to_thread(control.owner, self.spec)
                state = await self.owner.watch.remote(self.revision, self.replica)
            except (RayActorError, ActorUnavailableError, RaySystemError) as exc:
                log.warning("lost the control plane of %s (%s); finding it again", self.spec.name, type(exc).__name__)
                self.owner = None
                await asyncio.sleep(1.0)
                continue
            if state["revision"] == self.revision:  # a quiet long poll: unload what retired meanwhile
                await self.pool.prepare(self.plan.versions if self.plan else frozenset())
                continue
            try:
                await self._apply(state)
            except Exception:  # noqa: BLE001 - e.g. a version that fails to load: keep serving the last plan, retry
                log.exception("could not apply revision %d of the control plane", state["revision"])
                await asyncio.sleep(1.0)

    async def _apply(self, state: dict) -> None:
        """Take a new state: keys at once; a plan once the versions it names are ready (no request waits on a load)."""
        from mlray.metrics import serving

        if state["keys"] is not None:
            self.keys = KeyRing(state["keys"], environ={})
        plan = TrafficPlan.from_dict(state["plan"]) if state["plan"] else None
        await self.pool.prepare(plan.versions if plan else frozenset())
        self.plan, self.revision = plan, state["revision"]
        for version, weight in (plan.weights.items() if plan else ()):
            serving()["weight"].set(weight, tags={"model_version": version})

    async def _flush_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                self.tally.record()
                await asyncio.to_thread(self._flush)
            except Exception:  # noqa: BLE001 - a failed flush keeps its rows for the next one
                log.exception("inference log or labels flush failed")

    def _flush(self) -> None:
        """Append the buffered inference records and labels (one commit each, when there are any)."""
        self.log.flush()
        self.labels.flush()

    # ------------------------------------------------------------------ requests

    def _authorize(self, request: Request) -> None:
        if self.spec.serve.auth and not self.keys.accepts(request.headers.get("authorization")):
            raise HTTPException(401, "a valid API key is required (Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})

    async def _body(self, request: Request, model):
        """The JSON body validated against `model`; 422 names each wrong field, as FastAPI does."""
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None

    @api.get("/v1/health")
    async def health(self) -> dict:
        ready = self.plan is not None
        return {"status": "ok" if ready else "starting", "champion": self.plan.champion if ready else None,
                "revision": self.revision}

    @api.get("/v1/models")
    async def models(self, request: Request) -> dict:
        self._authorize(request)
        served = sorted(self.plan.versions if self.plan else ())
        infos = await asyncio.gather(*(self.pool.info(v) for v in served))
        return {"rollout": self.plan.to_dict() if self.plan else None, "revision": self.revision,
                "versions": [info | {"weight": self.plan.weights.get(info["version"], 0.0)} for info in infos]}

    @api.post("/v1/predict")
    async def predict(self, request: Request):
        self._authorize(request)
        body = await self._body(request, self.request_model)
        plan, serve_spec = self.plan, self.spec.serve
        if plan is None:
            raise HTTPException(503, "no model is deployed yet", headers={"Retry-After": "1"})
        request_id = next(self.request_ids)
        sticky = request.headers.get(serve_spec.sticky_header)
        pinned = request.headers.get(serve_spec.pin_header)
        if pinned is not None and pinned not in plan.versions:
            raise HTTPException(400, f"version {pinned!r} is not served (served: {sorted(plan.versions)})")
        version = pinned or plan.pick(sticky)
        rows = body.all_rows()
        mirror = plan.mirror() if pinned is None else None
        if mirror and mirror != version:
            asyncio.create_task(self._shadow(mirror, rows, request_id, sticky))
        started = time.perf_counter()
        try:
            predictions = await self.pool.score(version, rows)
        except (BackPressureError, DeploymentUnavailableError):
            self.tally.request(version, "overloaded")
            raise HTTPException(503, f"model version {version} is at capacity: retry later",
                                headers={"Retry-After": str(serve_spec.retry_after_s)}) from None
        except Exception as exc:  # noqa: BLE001 - a model failure is a 500 with the request id, never a trace
            latency = (time.perf_counter() - started) * 1000
            self.log.record(request_id, version, rows, None, latency, sticky_key=sticky, error=type(exc).__name__)
            self.tally.request(version, "error")
            log.error("model version %s failed on request %s: %s", version, request_id, type(exc).__name__)
            return JSONResponse({"detail": "the model failed on this request", "request_id": request_id,
                                 "model_version": version}, status_code=500)
        latency = (time.perf_counter() - started) * 1000
        self.log.record(request_id, version, rows, predictions, latency, sticky_key=sticky)
        self.tally.request(version, "ok", latency / 1000, [s for s in map(score_of, predictions) if s is not None])
        answer = {"request_id": request_id, "model_version": version,
                  "feature_version": predictions[0].get("feature_version") if predictions else None,
                  "predictions": [self._answer(row, p) for row, p in zip(rows, predictions)]}
        encoded = json.dumps(answer, default=str, ensure_ascii=False, allow_nan=False, separators=(",", ":"))  # as Starlette
        return Response(encoded, media_type="application/json")

    def _answer(self, row: dict, prediction: dict) -> dict:
        """One row's prediction, with the row's id when the request carried one."""
        answer = {k: v for k, v in prediction.items() if k != "feature_version"}
        id_column = self.spec.train_table.id_column
        if id_column and row.get(id_column) is not None:
            answer = {id_column: row[id_column]} | answer
        return answer

    async def _shadow(self, version: str, rows: list[dict], request_id: str, sticky: str | None) -> None:
        started = time.perf_counter()
        try:
            predictions, error = await self.pool.score(version, rows), None
        except Exception as exc:  # noqa: BLE001 - a shadow's failure never reaches the caller; it is recorded
            predictions, error = None, type(exc).__name__
        self.log.record(request_id, version, rows, predictions, (time.perf_counter() - started) * 1000,
                        shadow=True, sticky_key=sticky, error=error)

    @api.post("/v1/feedback")
    async def feedback(self, request: Request) -> dict:
        self._authorize(request)
        body = await self._body(request, Feedback)
        stored = self.labels.add(body.request_id, body.row, body.label)
        return {"request_id": body.request_id, "row": body.row, "stored": stored}

    def __del__(self):
        if hasattr(self, "labels"):  # a replica whose __init__ failed has nothing buffered
            self._flush()  # what is still buffered when the replica stops


def ingress_app(spec: ProjectSpec, local: bool):
    """The project's ingress application; `local`: the model versions load inside it (serve.model_placement: ingress)."""
    serve_spec = spec.serve
    return Ingress.options(
        **ingress_scaling(serve_spec, local), ray_actor_options={"num_cpus": serve_spec.ingress_cpus},
        max_ongoing_requests=serve_spec.ingress_max_ongoing, max_queued_requests=serve_spec.max_queued_requests,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=serve_spec.retry_after_s),
    ).bind(spec, local)
