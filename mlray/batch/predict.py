"""`mlray predict`: score a pinned Delta snapshot with one registered model version, in one idempotent commit.

Everything is settled on the driver before any Ray work: the model reference is resolved to a
concrete version (an alias that moves mid-job cannot mix versions), the input table version is
pinned, and its columns are checked against what the package's features read. Ray Data then
reads only those columns, an actor pool scores Arrow batches through the package's own
`predict_frame` (the one feature transform), and the workers write Parquet files that the
driver commits in one Delta transaction. The batch id names the model version and the input
snapshot, so scoring the same snapshot with the same version again commits nothing.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import pyarrow as pa

from mlray import dataplane
from mlray.errors import UserError
from mlray.lake.tables import arrow_schema_of, conform, row_count, schema_difference
from mlray.registry.models import Registry
from mlray.registry.package import PackageConfig, TabularPackage, load_package, predict_frame, prediction_schema
from mlray.registry.tracking import point_at
from mlray.spec import PlatformSpec, ProjectSpec

log = logging.getLogger(__name__)

# Lineage columns every output row carries besides the input's id and the package's predictions.
LINEAGE = (("model_name", pa.string()), ("model_version", pa.int64()), ("input_table_version", pa.int64()))
BATCH_ROWS = 65_536  # rows per model call: bounded memory per actor, few enough calls to amortise overhead
ACTOR_CPUS = 0.5  # fractional, so scoring actors share a small machine with the readers and writers
# Starting an actor (a process importing torch and MLflow) costs seconds of CPU, about what scoring a few
# million rows does, so the pool starts with one actor per ROWS_PER_ACTOR rows and Ray may grow it.
ROWS_PER_ACTOR = 2_000_000
DRY_RUN_ROWS = 16  # scored on the driver first, so a bad column fails in one line before any Ray work


@dataclass
class PredictOutcome:
    rows: int  # rows written by this call (0 when the batch had been committed before)
    out_table: str
    out_version: int
    committed: bool  # False: these predictions were already in the output table
    model_name: str
    model_version: str
    feature_version: str
    table: str
    table_version: int


def output_schema(config: PackageConfig, id_field: pa.Field) -> pa.Schema:
    """The input's id column, the package's prediction columns, then model name/version and input table version."""
    predictions = prediction_schema(config)
    lineage = [pa.field(name, kind) for name, kind in LINEAGE]
    if id_field.name in predictions.names + [f.name for f in lineage]:
        raise UserError(f"the id column '{id_field.name}' has the name of an output column of predictions")
    return pa.schema([id_field, *predictions, *lineage])


def scored_rows(ids: pa.ChunkedArray | pa.Array, predictions, lineage: dict, schema: pa.Schema, name: str) -> pa.Table:
    """One batch of output rows: ids, `predict_frame`'s frame, and the lineage values repeated, as `schema`."""
    columns = {schema.names[0]: ids}
    columns.update({column: pa.array(predictions[column]) for column in predictions.columns})
    columns.update({key: pa.repeat(pa.scalar(value, schema.field(key).type), len(ids)) for key, value in lineage.items()})
    return conform(pa.table(columns), schema, name)


class Scorer:
    """One actor of the pool: loads the package once, from the version's artifacts, then scores Arrow batches."""

    def __init__(self, platform: PlatformSpec, model_uri: str, schema: pa.Schema, lineage: dict, out_table: str):
        point_at(platform)  # the artifact URI was resolved on the driver: no registry or tracking-store lookups here
        self.package = load_package(model_uri)
        self.schema, self.lineage, self.out_table = schema, lineage, out_table

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _score(self.package, batch, self.lineage, self.schema, self.out_table)


def _id_column(spec: ProjectSpec, table: str) -> str:
    """The id column the input table declares, else the train table's (a scoring table shaped like it)."""
    declared = spec.data.tables.get(table) or spec.train_table
    if declared.id_column is None:
        raise UserError(f"table '{table}' has no id_column in the spec: predictions are keyed by the input's id")
    return declared.id_column


def _check_columns(schema: pa.Schema, needed: list[str], table: str, version: int, model: str) -> None:
    missing = [c for c in needed if c not in schema.names]
    if missing:
        raise UserError(f"table '{table}' v{version} lacks column(s) {', '.join(missing)}, needed to score it with"
                        f" model {model} (it has {', '.join(schema.names)})")


@dataclass
class Plan:
    """A prediction job settled on the driver: model version, pinned input, columns, output schema, batch id."""

    model_name: str
    model_version: str
    model_uri: str  # the version's artifacts, where every worker loads the package from
    package: TabularPackage
    table: str
    table_version: int
    rows: int  # in the pinned input version
    columns: list[str]  # what is read: the id column, then what the features read
    schema: pa.Schema  # of the output rows
    batch_id: str

    @property
    def model(self) -> str:
        return f"{self.model_name} v{self.model_version}"

    @property
    def lineage(self) -> dict:
        return {"model_name": self.model_name, "model_version": int(self.model_version),
                "input_table_version": self.table_version}


def plan_prediction(spec: ProjectSpec, model_ref: str, table: str, out: str, version: int | None = None) -> Plan:
    """Resolve the model to a version, pin the input, check columns and the output table: no Ray work."""
    registry = Registry(spec)
    name, model_version = registry.resolve(model_ref)
    model_uri = registry.artifact_uri(name, model_version)
    package = load_package(model_uri)
    lake = dataplane.lake_of(spec)
    snapshot = lake.open(table, version)
    pinned, input_schema = snapshot.version(), arrow_schema_of(snapshot)
    id_column = _id_column(spec, table)
    columns = list(dict.fromkeys([id_column, *package.fitted.source_columns]))
    _check_columns(input_schema, columns, table, pinned, f"{name} v{model_version}")
    plan = Plan(name, model_version, model_uri, package, table, pinned, row_count(snapshot), columns,
                output_schema(package.config, input_schema.field(id_column)),
                f"predict:{name}:{model_version}:{table}@{pinned}")
    if lake.exists(out):
        difference = schema_difference(plan.schema, arrow_schema_of(lake.open(out)))
        if difference:
            raise UserError(f"table '{out}' does not hold the predictions of model {plan.model}: {difference}")
    sample = snapshot.to_pyarrow_dataset().head(DRY_RUN_ROWS, columns=columns)
    if sample.num_rows:  # a column of the wrong type, or missing values without a default, fail here in one line
        _score(plan.package, sample, plan.lineage, plan.schema, out)
    return plan


def _score(package, batch: pa.Table, lineage: dict, schema: pa.Schema, out: str) -> pa.Table:
    frame = predict_frame(package.net, package.config, package.fitted, batch)
    return scored_rows(batch.column(schema.names[0]), frame, lineage, schema, out)


def predict_table(spec: ProjectSpec, model_ref: str, table: str, out: str, version: int | None = None,
                  actors: int | None = None) -> PredictOutcome:
    """Score `table` (pinned at `version`, default the latest) with `model_ref`; append to `out` exactly once.

    `actors` caps the scoring actor pool (default: one per CPU of the cluster)."""
    plan = plan_prediction(spec, model_ref, table, out, version)
    lake = dataplane.lake_of(spec)
    outcome = PredictOutcome(0, out, 0, False, plan.model_name, plan.model_version,
                             plan.package.config.feature_version, table, plan.table_version)
    if lake.committed(out, plan.batch_id):
        log.info("predictions of %s for %s@%d are already in %s", plan.model, table, plan.table_version, out)
        outcome.out_version = lake.latest_version(out)
        return outcome
    dataset = lake.dataset(table, plan.table_version, columns=plan.columns)
    scored = dataset.map_batches(
        Scorer, batch_format="pyarrow", batch_size=BATCH_ROWS, zero_copy_batch=True, num_cpus=ACTOR_CPUS,
        compute=_actor_pool(plan.rows, actors or _cluster_cpus()),
        fn_constructor_kwargs={"platform": spec.platform, "model_uri": plan.model_uri, "schema": plan.schema,
                               "lineage": plan.lineage, "out_table": out})
    result = lake.write_dataset(out, scored, plan.batch_id, plan.schema,
                                metadata={"mlray.source": f"{plan.model} on {table}@{plan.table_version}"})
    outcome.rows, outcome.out_version, outcome.committed = result.rows, result.version, result.committed
    return outcome


def _cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _actor_pool(rows: int, most: int):
    from ray.data import ActorPoolStrategy

    return ActorPoolStrategy(min_size=max(1, min(most, math.ceil(rows / ROWS_PER_ACTOR))), max_size=most)
