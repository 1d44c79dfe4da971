"""Model versions in a process: the registered package, the one transform, batched calls; on their own Serve
deployment (`ModelServer`) or inside the ingress."""

from __future__ import annotations

import asyncio
import logging
import math
import random
from dataclasses import dataclass

import pyarrow as pa
from ray import serve
from ray.serve.config import BackpressureConfig

from mlray.errors import UserError
from mlray.metrics import serving
from mlray.serve.schema import rows_table
from mlray.spec import BatchingSpec, PlatformSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fault:
    """Faults injected into one version's model calls, as in Istio's fault injection: for game days and tests that
    check the rollout analysis catches a slow or failing version. A failing call fails its whole batch."""

    delay_ms: float = 0.0
    error_rate: float = 0.0

    def __post_init__(self):
        if self.delay_ms < 0 or not 0 <= self.error_rate <= 1:
            raise UserError(f"fault injection: delay_ms must be >= 0 and error_rate within [0, 1], got {self}")

    def __bool__(self) -> bool:
        return bool(self.delay_ms or self.error_rate)


class InjectedFault(RuntimeError):
    """The error a version with `Fault.error_rate` raises on purpose."""


class LoadedVersion:
    """One registered version loaded in this process: its package, and batched scoring of validated request rows
    (typed as Arrow with `schema` once per batch, not once per request)."""

    def __init__(self, platform: PlatformSpec, model_uri: str, version: str, schema: pa.Schema,
                 fault: Fault | None = None):
        # heavy: torch and MLflow; only a process that loads a version needs them (the ingress imports this module)
        from mlray.registry.package import load_package
        from mlray.registry.tracking import point_at

        point_at(platform)
        self.package = load_package(model_uri)
        self.version, self.schema, self.fault = version, schema, fault or Fault()
        if self.fault:
            log.warning("model version %s runs with injected faults: %s", version, self.fault)

    def info(self) -> dict:
        config = self.package.config
        return {"version": self.version, "task": config.task, "feature_version": config.feature_version,
                "classes": config.classes, "lineage": config.lineage,
                "injected_fault": vars(self.fault) if self.fault else None}

    async def score(self, requests: list[list[dict]]) -> list[list[dict] | Exception]:
        """Prediction records for each request's rows, scored as one batch. A batch that fails to type or score is
        scored request by request, so only the request at fault gets its error (as its result: Serve's batching would
        give a raised error to every request of the batch)."""
        if self.fault.delay_ms:
            await asyncio.sleep(self.fault.delay_ms / 1000)
        if self.fault.error_rate and random.random() < self.fault.error_rate:
            raise InjectedFault(f"injected fault in model version {self.version}")
        serving()["batch"].observe(sum(map(len, requests)), tags={"model_version": self.version})
        try:
            return _per_request(self._records([row for request in requests for row in request]), requests)
        except Exception as exc:  # noqa: BLE001 - isolate the culprit below
            if len(requests) == 1:
                return [exc]
            log.warning("a batch of %d requests to version %s failed (%s); scoring them one by one", len(requests),
                        self.version, type(exc).__name__)
        return [self._alone(request) for request in requests]

    def _records(self, rows: list[dict]) -> list[dict]:
        from mlray.registry.scoring import predict_arrays, prediction_records  # heavy: torch; as for load_package above

        table = rows_table(rows, self.schema)
        return prediction_records(predict_arrays(self.package.net, self.package.config, self.package.fitted, table))

    def _alone(self, request: list[dict]) -> list[dict] | Exception:
        try:
            return self._records(request)
        except Exception as exc:  # noqa: BLE001 - this request's own failure, answered to it alone
            return exc

    def batched(self, batching: BatchingSpec):
        """`score` one request's rows at a time from the caller's side, batched across concurrent callers."""
        return serve.batch(max_batch_size=batching.max_batch_size,
                           batch_wait_timeout_s=batching.batch_wait_timeout_s)(self.score)


def _per_request(records: list[dict], requests: list[list[dict]]) -> list[list[dict]]:
    out, start = [], 0
    for request in requests:
        out.append(records[start:start + len(request)])
        start += len(request)
    return out


def raise_failed(result: list[dict] | Exception) -> list[dict]:
    """A request's result from `LoadedVersion.score`: its records, or its own error raised."""
    if isinstance(result, Exception):
        raise result
    return result


@serve.deployment(name="model")
class ModelServer:
    """One version on its own replicas (serve.model_placement: replicas): its own resources, GPUs included."""

    def __init__(self, platform: PlatformSpec, model_uri: str, version: str, schema: pa.Schema, batching: BatchingSpec,
                 fault: Fault | None = None):
        self.model = LoadedVersion(platform, model_uri, version, schema, fault)
        self.scorer = self.model.batched(batching)  # the spec's batching, as in the ingress

    def info(self) -> dict:
        return self.model.info()

    async def predict(self, rows: list[dict]) -> list[dict] | Exception:
        """One request's prediction records (or its own error), scored in a batch with concurrent requests."""
        return await self.scorer(rows)


def autoscaling_config(scaling, at_least: int = 0) -> dict:
    """Serve's autoscaling settings from the spec (`at_least`: a floor on min_replicas)."""
    return {"min_replicas": max(at_least, scaling.min_replicas), "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests, "upscale_delay_s": scaling.upscale_delay_s,
            "downscale_delay_s": scaling.downscale_delay_s}


def replica_options(serve_spec, gpus: float) -> dict:
    """Deployment options from the spec: autoscaling, fractional CPUs (and GPUs), the queue limit."""
    scaling = serve_spec.autoscaling
    actor = {"num_cpus": serve_spec.replica_cpus}
    if gpus:
        actor["num_gpus"] = gpus
    return {
        "ray_actor_options": actor,
        "autoscaling_config": autoscaling_config(scaling),
        "max_ongoing_requests": max(serve_spec.batching.max_batch_size, math.ceil(2 * scaling.target_ongoing_requests)),
        "max_queued_requests": serve_spec.max_queued_requests,
        "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=serve_spec.retry_after_s),
    }
