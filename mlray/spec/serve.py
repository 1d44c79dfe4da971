"""`serve`: the HTTP service."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mlray.spec.base import NAME_PATTERN, Section


class AutoscalingSpec(Section):
    """Ray Serve autoscaling of each model version's replicas."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(4, gt=0)
    upscale_delay_s: float = Field(5, ge=0, description="how long load must stay above the target before a replica is added")
    downscale_delay_s: float = Field(60, ge=0, description="how long load must stay below it before one is removed")

    @model_validator(mode="after")
    def _ordered(self) -> "AutoscalingSpec":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


class BatchingSpec(Section):
    """`@serve.batch`: requests to one model replica are scored together."""

    max_batch_size: int = Field(16, ge=1)
    batch_wait_timeout_s: float = Field(0.0, ge=0)


class ServeSpec(Section):
    """The HTTP service: ingress (auth, limits, validation, routing) in front of one deployment per model version."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    auth: bool = Field(True, description="require an API key (Authorization: Bearer <key>)")
    api_keys: list[str] = Field(default_factory=list, description="'sha256:<hex>' hashes of the keys; plain keys may "
                                                                  "also come from MLRAY_API_KEYS (comma-separated)")
    max_body_bytes: int = Field(1_048_576, ge=1, description="larger bodies get 413 before they are read")
    max_rows_per_request: int = Field(1000, ge=1, le=1_000_000)
    max_string_length: int = Field(1000, ge=1, description="longest string a request value (or a label) may be")
    max_queued_requests: int = Field(64, ge=1, description="per caller; beyond it requests get 503 with Retry-After")
    retry_after_s: int = Field(1, ge=1)
    model_placement: Literal["auto", "replicas", "ingress"] = Field(
        "auto", description="'replicas': each version on its own Serve deployment and resources (GPUs, large models); "
                            "'ingress': versions load inside the ingress replicas, one hop less, and the ingress "
                            "autoscales (small CPU models); 'auto': replicas when they get GPUs, else ingress")
    replica_cpus: float = Field(0.25, gt=0, description="CPUs reserved by each model replica (fractions are fine)")
    ingress_cpus: float = Field(0.25, gt=0)
    ingress_replicas: int = Field(1, ge=1)
    ingress_max_ongoing: int = Field(64, ge=1, description="requests one ingress replica handles at once (they mostly "
                                                           "wait on model replicas; Serve's default of 5 starves them)")
    use_gpu: bool | Literal["auto"] = Field("auto", description="model replicas take a GPU fraction when there are GPUs")
    gpu_fraction: float = Field(0.25, gt=0, le=1)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    sticky_header: str = Field("x-mlray-key", description="requests with the same value keep their version")
    pin_header: str = Field("x-mlray-version", description="pins a request to a served version (for testing)")
    inference_log_table: str = Field("inference_log", pattern=NAME_PATTERN)
    labels_table: str = Field("labels", pattern=NAME_PATTERN)
    log_flush_s: float = Field(2.0, gt=0, description="how often the ingress appends its inference log and labels to Delta")
    log_buffer_rows: int = Field(200_000, ge=1, description="inference-log rows (and labels) an ingress replica keeps "
                                 "while the lake is unreachable; beyond it the oldest are dropped and counted")

    @field_validator("api_keys")
    @classmethod
    def _hashed(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", key):
                raise ValueError("api_keys holds hashes, 'sha256:' and 64 hex digits (`mlray keys hash` makes one); "
                                 "put plain keys in MLRAY_API_KEYS instead")
        return keys
