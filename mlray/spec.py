"""The typed project spec: one YAML file drives every stage.

Defaults live here and nowhere else. Every model forbids unknown keys, so a typo is
an error naming the file, the line, the key and what was expected.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from mlray.errors import UserError

ENV_PREFIX = "MLRAY_"
DEFAULT_SPEC_FILE = "mlray.yaml"
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

ColumnType = Literal["int", "float", "string", "bool", "timestamp", "date"]
NUMERIC_TYPES = ("int", "float", "bool")
ORDERED_TYPES = ("int", "float", "timestamp", "date")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_duration(value: Any) -> timedelta:
    """'90s', '15m', '12h', '7d', '2w' or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(value))
    if not match and str(value).startswith("P"):  # ISO 8601, as a dumped spec writes durations ('PT2S')
        from pydantic import TypeAdapter

        try:
            return TypeAdapter(timedelta).validate_python(value)
        except ValidationError:
            pass
    if not match:
        raise ValueError(f"expected a duration such as '30m', '12h' or '7d', got {value!r}")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match[2]]
    return timedelta(**{unit: float(match[1])})


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[timedelta, Field(json_schema_extra={"examples": ["7d"]})]


# --------------------------------------------------------------------------- platform


class PlatformSpec(Section):
    """Where things run and where state lives; a URI switches to the real service."""

    ray_address: str | None = Field(None, description="None: embedded local Ray; 'auto' or ray://host:10001")
    num_cpus: float | None = Field(None, gt=0, description="logical CPUs of the embedded Ray (default: the machine's)")
    state_dir: str = Field(".mlray", description="local state folder, relative to the spec file (MLRAY_HOME overrides)")
    lake_root: str | None = Field(None, description="Delta tables root; default <state_dir>/lake; s3:// or gs:// allowed")
    storage_options: dict[str, str] = Field(default_factory=dict, description="passed to deltalake for object stores")
    mlflow_tracking_uri: str | None = Field(None, description="default: a SQLite store under <state_dir>/mlflow")

    @property
    def lake_uri(self) -> str:
        return self.lake_root or str(Path(self.state_dir) / "lake")

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{Path(self.state_dir) / 'mlflow' / 'mlflow.db'}"

    @property
    def reports_dir(self) -> Path:
        return Path(self.state_dir) / "reports"

    def resolved(self, base_dir: Path) -> "PlatformSpec":
        """Relative local paths become absolute, anchored at the spec's folder."""
        home = os.environ.get("MLRAY_HOME")
        state = Path(home) if home else Path(self.state_dir)
        if not state.is_absolute():
            state = base_dir / state
        lake = self.lake_root
        if lake and "://" not in lake and not Path(lake).is_absolute():
            lake = str((base_dir / lake).resolve())
        return self.model_copy(update={"state_dir": str(state.resolve()), "lake_root": lake})


# --------------------------------------------------------------------------- data


class ColumnSpec(Section):
    """One column: its type and the row-level expectations every ingested row must meet."""

    type: ColumnType
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str | int] | None = Field(None, min_length=1)
    description: str | None = None

    @model_validator(mode="after")
    def _check_rules_fit_type(self) -> "ColumnSpec":
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError(f"min/max apply to int and float columns, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.allowed is not None and self.type not in ("string", "int"):
            raise ValueError(f"allowed values apply to string and int columns, not {self.type}")
        return self


class Expectations(Section):
    """Table-level expectations checked by `mlray validate` on a pinned snapshot."""

    min_rows: int = Field(1, ge=0)
    unique_id: bool = True
    max_staleness: Duration | None = Field(None, description="newest event time must be younger than this")

    _parse_staleness = field_validator("max_staleness", mode="before")(
        lambda v: None if v is None else parse_duration(v)
    )


def _column_shorthand(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


class TableSpec(Section):
    columns: dict[Annotated[str, Field(pattern=NAME_PATTERN)], ColumnSpec] = Field(min_length=1)
    id_column: str | None = None
    event_time_column: str | None = None
    expectations: Expectations = Field(default_factory=Expectations)

    @field_validator("columns", mode="before")
    @classmethod
    def _allow_type_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {name: _column_shorthand(col) for name, col in value.items()}
        return value

    @model_validator(mode="after")
    def _check_key_columns(self) -> "TableSpec":
        for role in ("id_column", "event_time_column"):
            name = getattr(self, role)
            if name is not None and name not in self.columns:
                raise ValueError(f"{role} '{name}' is not among the columns ({', '.join(self.columns)})")
        if self.event_time_column and self.columns[self.event_time_column].type not in ("timestamp", "date"):
            raise ValueError(f"event_time_column '{self.event_time_column}' must be a timestamp or date column")
        return self


class DataSpec(Section):
    tables: dict[Annotated[str, Field(pattern=NAME_PATTERN)], TableSpec] = Field(min_length=1)
    train_table: str | None = Field(None, description="the table models learn from (default: the only table)")
    label_column: str | None = None

    @model_validator(mode="after")
    def _check_train_table(self) -> "DataSpec":
        if self.train_table is None:
            if len(self.tables) > 1:
                raise ValueError(f"train_table is required when several tables are declared ({', '.join(self.tables)})")
            object.__setattr__(self, "train_table", next(iter(self.tables)))
        elif self.train_table not in self.tables:
            raise ValueError(f"train_table '{self.train_table}' is not among the tables ({', '.join(self.tables)})")
        if self.label_column is not None and self.label_column not in self.tables[self.train_table].columns:
            raise ValueError(
                f"label_column '{self.label_column}' is not a column of table '{self.train_table}'"
                f" ({', '.join(self.tables[self.train_table].columns)})"
            )
        return self

    def table(self, name: str) -> TableSpec:
        if name not in self.tables:
            raise UserError(f"table '{name}' is not declared in the spec's data.tables ({', '.join(self.tables)})")
        return self.tables[name]


# --------------------------------------------------------------------------- features


class FeatureBase(Section):
    name: str = Field(pattern=NAME_PATTERN)
    column: str | None = Field(None, description="source column (default: the feature's name)")

    @property
    def source(self) -> str:
        return self.column or self.name


class Bucketize(Section):
    boundaries: list[float] | None = Field(None, min_length=1)
    quantiles: int | None = Field(None, ge=2, le=1000)

    @model_validator(mode="after")
    def _one_of(self) -> "Bucketize":
        if (self.boundaries is None) == (self.quantiles is None):
            raise ValueError("give exactly one of boundaries (a list) or quantiles (a number of buckets)")
        if self.boundaries is not None and self.boundaries != sorted(set(self.boundaries)):
            raise ValueError("boundaries must be strictly increasing")
        return self


class NumericFeature(FeatureBase):
    """clip → log1p → standardize (a float output) or bucketize (a bucket index output)."""

    kind: Literal["numeric"]
    clip: tuple[float | None, float | None] | None = None
    log1p: bool = False
    standardize: bool = True
    bucketize: Bucketize | None = None
    default: float | Literal["mean", "median"] | None = Field(None, description="fills missing values")


class CategoricalFeature(FeatureBase):
    """Vocabulary fitted from the data; index 0 is the out-of-vocabulary bucket."""

    kind: Literal["categorical"]
    top_k: int | None = Field(None, ge=1, description="keep the k most frequent values")
    min_count: int = Field(1, ge=1)
    default: str | int | None = Field(None, description="stands in for a missing value (then looked up as usual)")


class BooleanFeature(FeatureBase):
    kind: Literal["boolean"]
    default: bool | None = None


TimestampPart = Literal["hour", "weekday", "day", "month"]


class TimestampFeature(FeatureBase):
    """Calendar parts (UTC) of a timestamp, each a categorical index."""

    kind: Literal["timestamp"]
    parts: list[TimestampPart] = Field(default_factory=lambda: ["hour", "weekday"], min_length=1)


Feature = Annotated[
    Union[NumericFeature, CategoricalFeature, BooleanFeature, TimestampFeature], Field(discriminator="kind")
]

FEATURE_COLUMN_TYPES = {
    "numeric": ("int", "float", "bool"),
    "categorical": ("string", "int", "bool"),
    "boolean": ("bool",),
    "timestamp": ("timestamp", "date"),
}


# --------------------------------------------------------------------------- later stages


Task = Literal["auto", "binary", "multiclass", "regression"]


class ModelSpec(Section):
    """The tabular network: embeddings for categorical inputs, an MLP body, a head per task."""

    task: Task = Field("auto", description="auto: bool or two-valued label → binary, other int/string → multiclass, "
                                            "float → regression")
    hidden: list[int] = Field(default_factory=lambda: [64, 64], min_length=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    embedding_dim: int | None = Field(None, ge=1, le=256, description="default: min(16, 1.6·cardinality^0.56)")
    batch_norm: bool = False


class EarlyStopping(Section):
    patience: int = Field(3, ge=1, description="epochs without improvement of val_loss before stopping")
    min_delta: float = Field(0.0, ge=0)


class SplitSpec(Section):
    """Rows go to a split by a hash of their id: the same row, the same split, in every run and version."""

    validation: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> "SplitSpec":
        if self.validation + self.test >= 0.9:
            raise ValueError("validation + test must leave at least 10% of rows for training")
        return self


class GateSpec(Section):
    """Promotion gate: a new version becomes challenger only if it passes these."""

    min_metrics: dict[str, float] = Field(default_factory=dict, description="e.g. {roc_auc: 0.75}")
    max_metrics: dict[str, float] = Field(default_factory=dict, description="e.g. {rmse: 12.5}")
    metric: str | None = Field(None, description="compared with the champion (default: the task's main metric)")
    tolerance: float = Field(0.01, ge=0, description="how much worse than the champion it may be")


class TrainSpec(Section):
    num_workers: int = Field(2, ge=1)
    use_gpu: bool | Literal["auto"] = "auto"
    cpus_per_worker: float = Field(1.0, gt=0)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(512, ge=1)
    cache_inputs: bool = Field(True, description="keep the transformed inputs in Ray's object store after the first "
                                                 "pass instead of re-reading Delta every epoch (off: data larger than "
                                                 "the object store)")
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    precision: Literal["auto", "32", "16-mixed", "bf16-mixed"] = "auto"
    early_stopping: EarlyStopping | None = Field(default_factory=EarlyStopping)
    checkpoints_to_keep: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0, description="worker failures survived by resuming from the last checkpoint")
    split: SplitSpec = Field(default_factory=SplitSpec)
    threshold: float = Field(0.5, gt=0, lt=1, description="binary decision threshold")
    slices: list[str] = Field(default_factory=list, description="columns to report metrics per value of")
    gate: GateSpec = Field(default_factory=GateSpec)
    seed: int = 0


SEARCH_KINDS = ("uniform", "loguniform", "int", "choice")
TUNABLE_SECTIONS = {"model": ModelSpec, "train": TrainSpec}
UNTUNABLE = {"train.gate", "train.split", "train.early_stopping", "train.slices", "train.num_workers", "train.use_gpu",
             "train.cpus_per_worker", "train.max_failures", "train.checkpoints_to_keep", "train.epochs", "train.cache_inputs",
             "train.threshold", "train.precision", "model.task"}  # resources, evaluation and run control


class AshaSpec(Section):
    """ASHA early stopping: trials are compared at epoch grace_period·reduction_factor^k; the worse ones stop."""

    grace_period: int = Field(1, ge=1, description="epochs every trial trains before it can be stopped")
    reduction_factor: float = Field(2.0, gt=1)


def _search_dimension(key: str, spec: Any) -> tuple[str, Any]:
    """Check one search-space entry, {kind: args}; return (kind, args) or raise a one-line ValueError."""
    section, _, field = key.partition(".")
    owner = TUNABLE_SECTIONS.get(section)
    if owner is None or field not in owner.model_fields or key in UNTUNABLE:
        tunable = sorted(f"{s}.{f}" for s, m in TUNABLE_SECTIONS.items() for f in m.model_fields
                         if f"{s}.{f}" not in UNTUNABLE)
        raise ValueError(f"'{key}' cannot be tuned; tunable keys: {', '.join(tunable)}")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SEARCH_KINDS:
        raise ValueError(f"'{key}': expected one of {{{'|'.join(SEARCH_KINDS)}: ...}}, got {spec!r}")
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ValueError(f"'{key}': choice needs a non-empty list of values, got {args!r}")
        candidates = args
    else:
        numbers = isinstance(args, list) and len(args) == 2 and all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
        if not numbers or not args[0] < args[1] or (kind == "loguniform" and args[0] <= 0) or (
                kind == "int" and not all(isinstance(a, int) for a in args)):
            shape = {"uniform": "low < high", "loguniform": "0 < low < high", "int": "integers low < high"}[kind]
            raise ValueError(f"'{key}': {kind} needs [low, high] with {shape}, got {args!r}")
        candidates = args
    for value in candidates:  # every bound or choice must be a valid value of the field itself
        try:
            owner.model_validate({field: value})
        except ValidationError as exc:
            raise ValueError(f"'{key}': {value!r} is not a valid {key}: {_describe(exc.errors()[0])}") from None
    return kind, args


class TuneSpec(Section):
    """`mlray tune`: a Ray Tune sweep of Ray Train runs. Trials are ranked by validation loss (lower is better)."""

    space: dict[str, Any] = Field(
        default_factory=dict, description="key → {uniform|loguniform|int|choice: ...}, keys like train.learning_rate")
    trials: int = Field(8, ge=1, description="configurations sampled (with algorithm: grid, per grid point)")
    algorithm: Literal["random", "grid"] = Field("random", description="grid: every choice is tried; others sampled")
    max_concurrent: int | None = Field(None, ge=1, description="default: as many trials as the cluster's CPUs/GPUs fit")
    scheduler: AshaSpec | None = Field(default_factory=AshaSpec, description="null: every trial runs every epoch")

    @field_validator("space")
    @classmethod
    def _check_space(cls, space: dict[str, Any]) -> dict[str, Any]:
        for key, value in space.items():
            _search_dimension(key, value)
        return space

    def dimensions(self) -> dict[str, tuple[str, Any]]:
        return {key: _search_dimension(key, value) for key, value in self.space.items()}


class AutoscalingSpec(Section):
    """Ray Serve autoscaling of each model version's replicas."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(4, gt=0)

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
    max_rows_per_request: int = Field(1000, ge=1)
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
    log_flush_s: float = Field(2.0, gt=0, description="how often the ingress appends its inference log to Delta")

    @field_validator("api_keys")
    @classmethod
    def _hashed(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", key):
                raise ValueError("api_keys holds hashes, 'sha256:' and 64 hex digits (`mlray keys hash` makes one); "
                                 "put plain keys in MLRAY_API_KEYS instead")
        return keys


class RolloutChecks(Section):
    """What the challenger must show at every step, against the champion over the same interval."""

    max_error_rate: float = Field(0.02, ge=0, le=1, description="share of the challenger's requests that failed")
    max_p99_latency_ratio: float = Field(1.5, gt=0, description="challenger p99 / champion p99")
    max_divergence: float = Field(0.25, ge=0, description="population stability index between their score "
                                                          "distributions")
    max_metric_drop: float = Field(0.05, ge=0, description="live accuracy, precision and recall on labelled feedback: "
                                                           "how much lower than the champion's each may be (regression: "
                                                           "how much higher its mean absolute error, relative)")
    min_labels: int = Field(30, ge=1, description="labelled rows per version before live quality is compared")
    require_labels: bool = Field(False, description="a step waits for min_labels (else it may pass without them)")


class RolloutSpec(Section):
    """A progressive rollout, Flagger-like: steps, an interval, checks, a failure limit."""

    steps: list[Union[Literal["shadow"], Annotated[float, Field(gt=0, le=100)]]] = Field(
        default_factory=lambda: ["shadow", 5.0, 25.0, 50.0, 100.0], min_length=1,
        description="'shadow' (mirrored, never answered) or the challenger's weight in percent")
    interval: Duration = Field(timedelta(minutes=1), description="how long each step runs before it is analysed")
    min_requests: int = Field(50, ge=1, description="challenger requests a step needs before it can pass")
    failure_limit: int = Field(2, ge=1, description="failed analyses before an automatic rollback")
    shadow_fraction: float = Field(1.0, gt=0, le=1)
    checks: RolloutChecks = Field(default_factory=RolloutChecks)

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> timedelta:
        return parse_duration(value)


class MonitorSpec(Section):
    """Filled by the monitoring issue."""


# --------------------------------------------------------------------------- project


class ProjectSpec(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    platform: PlatformSpec = Field(default_factory=PlatformSpec)
    data: DataSpec
    features: list[Feature] = Field(min_length=1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    tune: TuneSpec = Field(default_factory=TuneSpec)
    serve: ServeSpec = Field(default_factory=ServeSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    monitor: MonitorSpec = Field(default_factory=MonitorSpec)

    _path: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _check_features_against_schema(self) -> "ProjectSpec":
        table = self.data.tables[self.data.train_table]
        seen: set[str] = set()
        for feature in self.features:
            if feature.name in seen:
                raise ValueError(f"feature '{feature.name}' is declared twice")
            seen.add(feature.name)
            column = table.columns.get(feature.source)
            if column is None:
                raise ValueError(
                    f"feature '{feature.name}' reads column '{feature.source}', which table "
                    f"'{self.data.train_table}' does not have"
                )
            if feature.source == self.data.label_column:
                raise ValueError(f"feature '{feature.name}' reads the label column '{feature.source}'")
            accepted = FEATURE_COLUMN_TYPES[feature.kind]
            if column.type not in accepted:
                raise ValueError(
                    f"feature '{feature.name}' is {feature.kind} but column '{feature.source}' is {column.type}"
                    f" (expected {' or '.join(accepted)})"
                )
        return self

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def train_table(self) -> TableSpec:
        return self.data.tables[self.data.train_table]


# --------------------------------------------------------------------------- loading


def env_overrides(environ: dict[str, str] | None = None) -> dict[tuple[str, ...], tuple[str, Any]]:
    """MLRAY_PLATFORM__RAY_ADDRESS=auto → {('platform', 'ray_address'): ('MLRAY_...', 'auto')}."""
    environ = os.environ if environ is None else environ
    found = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        path = tuple(part.lower() for part in key[len(ENV_PREFIX):].split("__"))
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        found[path] = (key, value)
    return found


def _apply_override(doc: dict, path: tuple[str, ...], value: Any, origin: str) -> None:
    node = doc
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"{origin}: cannot set a key inside '{part}', which is not a mapping")
        node = child
    node[path[-1]] = value


def _line_of(root: yaml.Node | None, loc: tuple) -> int | None:
    """The line in the YAML file where the value at `loc` (or its nearest parent) stands."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(part)), None)
            key = next((k for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            line, node = key.start_mark.line + 1, match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            continue  # pydantic adds union tags such as 'numeric' to the location
    return line


def _describe(error: dict) -> str:
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown key (check the spelling; see `mlray init` for a full example)"
    if error["type"] == "missing":
        return "required key is missing"
    if error["type"] in ("literal_error", "enum") and "input" in error:
        return f"{message}, got {error['input']!r}"
    return message


def format_validation_error(exc: ValidationError, source: str, root: yaml.Node | None, overridden: dict) -> str:
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc if not (isinstance(p, str) and p in FEATURE_COLUMN_TYPES)) or "(top level)"
    origin = next((env for path, (env, _) in overridden.items() if loc[: len(path)] == path), None)
    where = origin or (f"{source}:{line}" if (line := _line_of(root, loc)) else source)
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {key}: {_describe(error)}{more}"


def parse_spec(text: str, source: str = "<spec>", base_dir: Path | None = None, environ=None) -> ProjectSpec:
    """Parse and validate spec text; environment overrides apply on top."""
    try:
        root = yaml.compose(text)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise UserError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise UserError(f"{source}: expected a mapping of sections (platform, data, features, ...)")
    overridden = env_overrides(environ)
    for path, (origin, value) in overridden.items():
        _apply_override(doc, path, value, origin)
    try:
        spec = ProjectSpec.model_validate(doc)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source, root, overridden)) from None
    base = base_dir or Path.cwd()
    spec = spec.model_copy(update={"platform": spec.platform.resolved(base)})
    return spec


def starter_spec(name: str | None = None) -> str:
    """The starter spec `mlray init` writes: a card-fraud example with every key explained."""
    text = resources.files("mlray").joinpath("templates/starter.yaml").read_text()
    return text.replace("name: card-fraud", f"name: {name}", 1) if name else text


def load_spec(path: str | Path | None = None) -> ProjectSpec:
    """Load the spec from `path`, $MLRAY_SPEC or ./mlray.yaml."""
    path = Path(path or os.environ.get("MLRAY_SPEC") or DEFAULT_SPEC_FILE)
    if not path.is_file():
        raise UserError(f"{path}: spec file not found (create one with `mlray init`)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the spec file: {exc}") from None
    spec = parse_spec(text, str(path), base_dir=path.resolve().parent)
    spec._path = path.resolve()
    return spec
