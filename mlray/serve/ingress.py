"""The HTTP front door: API keys, size limits, validation, routing between versions, shadow, logging.

`Ingress` is one Serve deployment per project, built with `ingress_app(spec)`. Its replicas share
nothing but the control plane and the lake: each follows the control plane's state (a long poll,
so a new plan or key set applies as soon as it is committed), routes with the plan
(`routing.TrafficPlan`) and scores through a model pool (`pool`), in process or over handles.
"""


import asyncio
import json
import logging
import time

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError, RaySystemError
from ray.serve.config import BackpressureConfig
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from mlray.control.retry import backoff
from mlray.lake import Lake
from mlray.metrics import serving
from mlray.registry.scores import score_of
from mlray.serve import control
from mlray.serve.auth import KeyRing, fingerprint
from mlray.serve.limits import BodyLimit
from mlray.serve.logbook import InferenceLog, LabelLog, create_tables, log_schema
from mlray.serve.model_server import autoscaling_config
from mlray.serve.openapi import with_request_bodies
from mlray.serve.pool import HandlePool, InProcessPool
from mlray.serve.request_ids import FeedbackRefused, RequestIds
from mlray.serve.routing import TrafficPlan
from mlray.serve.schema import feedback_model, label_text, request_columns, request_model, row_model
from mlray.serve.tally import Tally
from mlray.spec import ProjectSpec, ServeSpec

log = logging.getLogger(__name__)

# The OpenAPI document is served by `Ingress.openapi`, behind the API key; no Swagger UI (it loads from a CDN).
api = FastAPI(title="mlray", version="1", description="Predictions from the registered model versions of a project.",
              openapi_url=None, docs_url=None, redoc_url=None)
api.add_middleware(BodyLimit, limit=lambda: api.state.max_body_bytes)
api.state.max_body_bytes = 1_048_576  # each replica sets its spec's limit


def ingress_scaling(serve_spec, local: bool) -> dict:
    """A fixed number of ingress replicas; with the models inside the ingress, the spec's autoscaling."""
    if not local:
        return {"num_replicas": serve_spec.ingress_replicas}
    return {"autoscaling_config": autoscaling_config(serve_spec.autoscaling, at_least=1)}


def encoded(answer: dict) -> bytes:
    """An answer as compact JSON, as Starlette encodes it (no NaN: a ValueError). Defined above `Ingress`: Serve captures
    what the class refers to when it is declared."""
    return json.dumps(answer, default=str, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


@serve.deployment(name="ingress")
@serve.ingress(api)
class Ingress:
    async def __init__(self, spec: ProjectSpec, local: bool):
        serve_spec = spec.serve
        api.title = f"mlray: {spec.name}"
        self._take_settings(spec)
        self.lake, self.tables_ready = Lake.from_platform(spec.platform), False  # the first flush makes sure of the tables
        self.replica = serve.get_replica_context().replica_id.unique_id
        writer, bound = f"mlray-serve:{spec.name}:{self.replica}", serve_spec.log_buffer_rows
        self.log = InferenceLog(self.lake, serve_spec.inference_log_table, log_schema(spec), writer, bound)
        self.labels = LabelLog(self.lake, serve_spec.labels_table, writer, bound)
        self.pool = InProcessPool(spec) if local else HandlePool(spec)
        self.tally = Tally()
        self.revision, self.plan, self.packages, self.keys = -1, None, {}, KeyRing([], environ={})
        self.owner = control.owner(spec)
        self.ids = RequestIds(bytes.fromhex(await self.owner.request_id_secret.remote()))
        await self._apply(await self.owner.watch.remote(-1, self.replica))
        self.tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._flush_every())]

    # ------------------------------------------------------------------ following the control plane

    async def _follow(self) -> None:
        """Long-poll the control plane; when it is gone (restarting, or killed), find or start it again. Failures
        are retried with a backoff (1 s doubling to 30 s), so an outage is not met with a storm of calls."""
        failures = 0
        while True:
            try:
                if self.owner is None:
                    self.owner = await asyncio.to_thread(control.owner, self.spec)
                state = await self.owner.watch.remote(self.revision, self.replica)
                if state["revision"] == self.revision:  # a quiet long poll: unload what retired meanwhile
                    await self.pool.prepare(self.plan.versions if self.plan else frozenset(), self.packages)
                else:
                    await self._apply(state)
                failures = 0
            except (RayActorError, ActorUnavailableError, RaySystemError) as exc:
                log.warning("lost the control plane of %s (%s); finding it again", self.spec.name, type(exc).__name__)
                self.owner, failures = None, failures + 1
                await asyncio.sleep(backoff(failures))
            except Exception:  # noqa: BLE001 - e.g. a version that fails to load: keep serving the last plan, retry
                failures += 1
                log.exception("could not apply the control plane's revision (attempt %d)", failures)
                await asyncio.sleep(backoff(failures))

    def _take_settings(self, spec: ProjectSpec) -> None:
        """The spec's `serve` settings that requests read: authentication, limits, headers, the flush period."""
        serve_spec = spec.serve
        self.spec, api.state.max_body_bytes = spec, serve_spec.max_body_bytes
        self.columns, required = request_columns(spec)
        self.request_model = request_model(row_model(spec.train_table, self.columns, required,
                                                     max_string_length=serve_spec.max_string_length),
                                           serve_spec.max_rows_per_request)
        self.feedback_model = feedback_model(spec)
        self.document = with_request_bodies(api.openapi(), self.request_model, self.feedback_model)

    async def _apply(self, state: dict) -> None:
        """Take a new state: keys and `serve` settings at once; a plan once the versions it names are ready (no
        request waits on a load)."""
        if state["keys"] is not None:
            self.keys = KeyRing(state["keys"], environ={})
        if state.get("serve") is not None and state["serve"] != self.spec.serve.model_dump(mode="json"):
            self._take_settings(self.spec.model_copy(update={"serve": ServeSpec.model_validate(state["serve"])}))
        plan = TrafficPlan.from_dict(state["plan"]) if state["plan"] else None
        packages = state.get("packages") or {}
        await self.pool.prepare(plan.versions if plan else frozenset(), packages)
        self.plan, self.packages, self.revision = plan, packages, state["revision"]
        for version, weight in (plan.weights.items() if plan else ()):
            serving()["weight"].set(weight, tags={"model_version": version})

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(self.spec.serve.log_flush_s)
            try:
                self.tally.record()
                await asyncio.to_thread(self._flush)
                self._record_buffers()
            except Exception:  # noqa: BLE001 - a failed flush keeps its rows for the next one
                log.exception("inference log or labels flush failed")

    def _record_buffers(self) -> None:
        metrics = serving()
        for book in (self.log, self.labels):
            stats, tags = book.stats(), {"table": book.table}
            metrics["log_pending"].set(stats.pending, tags=tags)
            if stats.dropped:
                metrics["log_dropped"].inc(stats.dropped, tags=tags)
            if stats.rejected:
                metrics["log_rejected"].inc(stats.rejected, tags=tags)

    def _flush(self) -> None:
        """Append the buffered inference records and labels (one commit each, when there are any). The first flush
        makes sure of the tables (not the constructor: a replica must start while the lake is unreachable)."""
        if not self.tables_ready:
            create_tables(self.spec, self.lake)
            self.tables_ready = True
        self.log.flush()
        self.labels.flush()

    # ------------------------------------------------------------------ requests

    def _authorize(self, request: Request) -> str:
        """The caller's key hash ('' when the service takes no keys); 401 without a valid key."""
        if not self.spec.serve.auth:
            return ""
        key_hash = self.keys.match(request.headers.get("authorization"))
        if key_hash is None:
            raise HTTPException(401, "a valid API key is required (Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})
        return key_hash

    async def _body(self, request: Request, model):
        """The JSON body validated against `model`; 422 names each wrong field, as FastAPI does, without echoing the
        value (a NaN has no JSON form; a long string need not come back)."""
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> dict:
        self._authorize(request)
        return self.document

    @api.get("/v1/health")
    async def health(self) -> dict:
        """Whether the service answers, and nothing else: it needs no key (`/v1/models` tells what is served)."""
        return {"status": "ok" if self.plan is not None else "starting"}

    @api.get("/v1/models")
    async def models(self, request: Request) -> dict:
        self._authorize(request)
        served = sorted(self.plan.versions if self.plan else ())
        infos = await asyncio.gather(*(self.pool.info(v) for v in served))
        return {"rollout": self.plan.to_dict() if self.plan else None, "revision": self.revision,
                "versions": [info | {"weight": self.plan.weights.get(info["version"], 0.0)} for info in infos]}

    @api.post("/v1/predict")
    async def predict(self, request: Request):
        key_hash = self._authorize(request)
        body = await self._body(request, self.request_model)
        plan, serve_spec = self.plan, self.spec.serve
        if plan is None:
            raise HTTPException(503, "no model is deployed yet", headers={"Retry-After": "1"})
        sticky = request.headers.get(serve_spec.sticky_header)
        pinned = request.headers.get(serve_spec.pin_header)
        if pinned is not None and pinned not in plan.versions:
            raise HTTPException(400, f"version {pinned!r} is not served (served: {sorted(plan.versions)})")
        version = pinned or plan.pick(sticky)
        rows = body.all_rows()
        call = {"request_id": self.ids.issue(len(rows), key_hash), "sticky_key": sticky, "pinned": pinned is not None,
                "key_fingerprint": fingerprint(key_hash) if key_hash else None}
        mirror = plan.mirror() if pinned is None else None
        if mirror and mirror != version:
            asyncio.create_task(self._shadow(mirror, rows, call))
        started = time.perf_counter()
        try:
            predictions = await self.pool.score(version, rows)
            answer = encoded({"request_id": call["request_id"], "model_version": version,
                              "feature_version": predictions[0].get("feature_version") if predictions else None,
                              "predictions": [self._answer(row, p) for row, p in zip(rows, predictions)]})
        except (BackPressureError, DeploymentUnavailableError):
            self.tally.request(version, "overloaded")
            raise HTTPException(503, f"model version {version} is at capacity: retry later",
                                headers={"Retry-After": str(serve_spec.retry_after_s)}) from None
        except Exception as exc:  # noqa: BLE001 - a model failure is a 500 with the request id, never a trace
            self.log.record(version=version, rows=rows, predictions=None, error=type(exc).__name__,
                            latency_ms=(time.perf_counter() - started) * 1000, **call)
            self.tally.request(version, "error")
            log.error("model version %s failed on request %s: %s", version, call["request_id"], type(exc).__name__)
            return JSONResponse({"detail": "the model failed on this request", "request_id": call["request_id"],
                                 "model_version": version}, status_code=500)
        latency = (time.perf_counter() - started) * 1000
        self.log.record(version=version, rows=rows, predictions=predictions, latency_ms=latency, **call)
        self.tally.request(version, "ok", latency / 1000, [s for s in map(score_of, predictions) if s is not None])
        return Response(answer, media_type="application/json")

    def _answer(self, row: dict, prediction: dict) -> dict:
        """One row's prediction, with the row's id when the request carried one."""
        answer = {k: v for k, v in prediction.items() if k != "feature_version"}
        id_column = self.spec.train_table.id_column
        if id_column and row.get(id_column) is not None:
            answer = {id_column: row[id_column]} | answer
        return answer

    async def _shadow(self, version: str, rows: list[dict], call: dict) -> None:
        started = time.perf_counter()
        try:
            predictions, error = await self.pool.score(version, rows), None
        except Exception as exc:  # noqa: BLE001 - a shadow's failure never reaches the caller; it is recorded
            predictions, error = None, type(exc).__name__
        self.log.record(version=version, rows=rows, predictions=predictions, error=error, shadow=True,
                        latency_ms=(time.perf_counter() - started) * 1000, **call)

    @api.post("/v1/feedback")
    async def feedback(self, request: Request) -> dict:
        """Store the true label of a row this service answered, for the key that asked: 404 for a request or row it
        did not answer, 403 for another key's request."""
        key_hash = self._authorize(request)
        body = await self._body(request, self.feedback_model)
        try:
            self.ids.check(body.request_id, body.row, key_hash, other_keys=tuple(self.keys.hashes) if key_hash else ())
        except FeedbackRefused as refused:
            raise HTTPException(refused.status, refused.detail) from None
        stored = self.labels.add(body.request_id, body.row, label_text(body.label))
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
