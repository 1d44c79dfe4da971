"""`mlray predict`: score a pinned Delta snapshot with one registered model version, in one idempotent commit.

Everything is settled on the driver before any Ray work: the model reference is resolved to a
concrete version (an alias that moves mid-job cannot mix versions), the input table version is
pinned, and its columns are checked against what the package's features read. The execution is
picked by size: up to `LOCAL_ROWS` rows the driver scores the snapshot itself, in Arrow batches
(starting a pool of processes would cost more than the scoring); above, Ray Data reads only the
needed columns, an actor pool scores Arrow batches with the model the driver loaded (handed to
them as tensors: the actors never import MLflow), and the workers write Parquet files that the
driver commits in one Delta transaction. Both score through the package's `predict_arrays` (the
one feature transform). The batch id names the model version and the input snapshot, so scoring
the same snapshot with the same version again commits nothing.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from mlray import dataplane
from mlray.batch.scorer import Scorer, score_batch
from mlray.errors import UserError
from mlray.lake import Lake
from mlray.lake.io import schema_difference
from mlray.lake.tables import AppendResult, arrow_schema_of, row_count
from mlray.registry.models import Registry
from mlray.registry.package import PackageConfig, load_package, prediction_schema
from mlray.registry.scoring import Scoring
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)

# Lineage columns every output row carries besides the input's id and the package's predictions.
LINEAGE = (("model_name", pa.string()), ("model_version", pa.int64()), ("input_table_version", pa.int64()))
BATCH_ROWS = 65_536  # rows per model call: bounded memory per actor, few enough calls to amortise overhead
ACTOR_CPUS = 0.5  # fractional, so scoring actors share a small machine with the readers and writers
# Starting an actor (a process importing torch) costs seconds of CPU, about what scoring a few million rows in
# one process does: up to LOCAL_ROWS rows the driver scores by itself; above, the pool starts with one actor
# per ROWS_PER_ACTOR rows and Ray may grow it.
LOCAL_ROWS = 2_000_000
ROWS_PER_ACTOR = 2_000_000
DRY_RUN_ROWS = 16  # scored on the driver first, so a bad column fails in one line before any Ray work
Execution = Literal["auto", "local", "ray"]
EXECUTIONS = ("auto", "local", "ray")


def check_execution(execution: str) -> None:
    if execution not in EXECUTIONS:
        raise UserError(f"execution must be one of {', '.join(EXECUTIONS)}, not '{execution}'")


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
    execution: str = ""  # 'local' (the driver scored it) or 'ray' (an actor pool did)


def output_schema(config: PackageConfig, id_field: pa.Field) -> pa.Schema:
    """The input's id column, the package's prediction columns, then model name/version and input table version."""
    predictions = prediction_schema(config)
    lineage = [pa.field(name, kind) for name, kind in LINEAGE]
    if id_field.name in predictions.names + [f.name for f in lineage]:
        raise UserError(f"the id column '{id_field.name}' has the name of an output column of predictions")
    return pa.schema([id_field, *predictions, *lineage])


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
    model_uri: str  # the version's package, pinned to its manifest's digest
    scoring: Scoring  # the loaded model, handed to every scoring actor
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
    plan = Plan(name, model_version, model_uri, Scoring.of(package), table, pinned, row_count(snapshot), columns,
                output_schema(package.config, input_schema.field(id_column)),
                f"predict:{name}:{model_version}:{table}@{pinned}")
    if lake.exists(out):
        difference = schema_difference(plan.schema, arrow_schema_of(lake.open(out)))
        if difference:
            raise UserError(f"table '{out}' does not hold the predictions of model {plan.model}: {difference}")
    sample = snapshot.to_pyarrow_dataset().head(DRY_RUN_ROWS, columns=columns)
    if sample.num_rows:  # a column of the wrong type, or missing values without a default, fail here in one line
        score_batch(plan.scoring, sample, plan.lineage, plan.schema, out)
    return plan


def predict_table(spec: ProjectSpec, model_ref: str, table: str, out: str, version: int | None = None,
                  actors: int | None = None, execution: Execution = "auto") -> PredictOutcome:
    """Score `table` (pinned at `version`, default the latest) with `model_ref`; append to `out` exactly once.

    `execution` 'auto' scores up to LOCAL_ROWS rows on the driver and more on an actor pool; `actors` caps the pool
    (default: one per CPU of the cluster)."""
    check_execution(execution)
    plan = plan_prediction(spec, model_ref, table, out, version)
    lake = dataplane.lake_of(spec)
    chosen = execution if execution != "auto" else ("local" if plan.rows <= LOCAL_ROWS else "ray")
    outcome = PredictOutcome(0, out, 0, False, plan.model_name, plan.model_version,
                             plan.scoring.config.feature_version, table, plan.table_version, chosen)
    if lake.committed(out, plan.batch_id):
        log.info("predictions of %s for %s@%d are already in %s", plan.model, table, plan.table_version, out)
        outcome.out_version = lake.latest_version(out)
        return outcome
    log.info("scoring %d rows of %s@%d with %s (%s)", plan.rows, table, plan.table_version, plan.model,
             "on the driver" if chosen == "local" else "on an actor pool")
    metadata = {"mlray.source": f"{plan.model} on {table}@{plan.table_version}"}
    if chosen == "local":
        result = _score_on_driver(lake, plan, out, metadata)
    else:
        result = _score_on_pool(lake, plan, out, metadata, actors)
    outcome.rows, outcome.out_version, outcome.committed = result.rows, result.version, result.committed
    return outcome


def _score_on_driver(lake: Lake, plan: Plan, out: str, metadata: dict) -> AppendResult:
    """Read the snapshot in Arrow batches, score each, append all in one commit."""
    snapshot = lake.open(plan.table, plan.table_version).to_pyarrow_dataset()
    scored = [score_batch(plan.scoring, pa.Table.from_batches([batch]), plan.lineage, plan.schema, out)
              for batch in snapshot.to_batches(columns=plan.columns, batch_size=BATCH_ROWS) if batch.num_rows]
    batches = [batch for table in scored for batch in table.to_batches()]
    return lake.append(out, batches or plan.schema.empty_table(), plan.batch_id, plan.schema, metadata)


def _score_on_pool(lake: Lake, plan: Plan, out: str, metadata: dict, actors: int | None) -> AppendResult:
    """Ray Data reads the needed columns, an actor pool scores, the workers write Parquet, the driver commits."""
    dataset = lake.dataset(plan.table, plan.table_version, columns=plan.columns)
    scored = dataset.map_batches(
        Scorer, batch_format="pyarrow", batch_size=BATCH_ROWS, zero_copy_batch=True, num_cpus=ACTOR_CPUS,
        compute=_actor_pool(plan.rows, actors or _cluster_cpus()),
        fn_constructor_kwargs={"scoring": plan.scoring, "schema": plan.schema, "lineage": plan.lineage,
                               "out_table": out})
    return lake.write_dataset(out, scored, plan.batch_id, plan.schema, metadata=metadata)


def _cluster_cpus() -> int:
    import ray  # Ray: only the actor-pool path uses it; importing this module and local scoring need no Ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _actor_pool(rows: int, most: int):
    from ray.data import ActorPoolStrategy  # Ray Data: only the actor-pool path uses it (as in `_cluster_cpus`)

    return ActorPoolStrategy(min_size=max(1, min(most, math.ceil(rows / ROWS_PER_ACTOR))), max_size=most)
