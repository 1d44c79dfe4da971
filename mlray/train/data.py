"""Training data: labels encoded for the task, rows split by a hash of their id, inputs from the one transform."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlray.errors import UserError
from mlray.features import FittedFeatures, transform
from mlray.lake import Lake
from mlray.lake.schema import stable_hash
from mlray.spec import ProjectSpec, SplitSpec

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class LabelEncoding:
    """The task, and for classification the label values in index order."""

    column: str
    task: str
    classes: list = field(default_factory=list)

    def encode(self, values: pa.Array) -> np.ndarray:
        if self.task == "regression":
            return pc.cast(values, pa.float32()).to_numpy(zero_copy_only=False)
        index = pc.index_in(values, value_set=pa.array(self.classes, values.type))
        return pc.fill_null(index, -1).to_numpy(zero_copy_only=False).astype(np.int64)

    def to_dict(self) -> dict:
        return {"column": self.column, "task": self.task, "classes": self.classes}


def resolve_labels(lake: Lake, spec: ProjectSpec, version: int) -> LabelEncoding:
    """Decide the task from the label column (or the spec) and find the classes, before any worker starts."""
    name, label = spec.data.train_table, spec.data.label_column
    if label is None:
        raise UserError("data.label_column is not set: training needs a label column")
    column_type = spec.train_table.columns[label].type
    values = lake.read(name, version, columns=[label]).column(label)
    distinct = pc.unique(values.combine_chunks().drop_null())
    where = f"label '{label}' in table '{name}' v{version}"
    if len(distinct) == 0:
        raise UserError(f"{where} has no values (the table is empty or every label is null)")
    task = spec.model.task
    if task == "auto":
        task = ("regression" if column_type == "float" else
                "binary" if column_type == "bool" or len(distinct) == 2 else "multiclass")
    if task == "regression":
        if column_type not in ("float", "int"):
            raise UserError(f"model.task is regression but {where} is {column_type}, not numeric")
        return LabelEncoding(label, task)
    if len(distinct) < 2:
        raise UserError(f"{where} has a single value ({distinct[0].as_py()!r}): there is nothing to learn")
    if task == "binary" and len(distinct) > 2:
        raise UserError(f"model.task is binary but {where} has {len(distinct)} values")
    classes = sorted(distinct.to_pylist())
    return LabelEncoding(label, task, classes)


def split_index(ids: pa.Array, split: SplitSpec) -> np.ndarray:
    """0 train, 1 validation, 2 test, by a hash of the id: stable across runs and table versions."""
    position = stable_hash(ids) / 2.0**64
    return np.where(position < split.test, 2, np.where(position < split.test + split.validation, 1, 0))


def model_inputs(batch: pa.Table, fitted: FittedFeatures, labels: LabelEncoding, id_column: str,
                 split: SplitSpec, keep: int) -> dict[str, np.ndarray]:
    """The rows of one split as model inputs (the one `transform`) plus the encoded label."""
    chosen = split_index(batch.column(id_column), split) == keep
    label = batch.column(labels.column).combine_chunks()
    chosen &= label.is_valid().to_numpy(zero_copy_only=False)  # unlabelled rows teach nothing
    rows = batch.filter(pa.array(chosen))
    out = transform(rows, fitted)
    out["label"] = labels.encode(rows.column(labels.column).combine_chunks())
    return out


def _split_counts(batch: pa.Table, id_column: str, split: SplitSpec) -> pa.Table:
    counts = np.bincount(split_index(batch.column(id_column), split), minlength=len(SPLITS))
    return pa.table({name: [int(counts[i])] for i, name in enumerate(SPLITS)})


def check_splits(dataset, spec: ProjectSpec) -> dict[str, int]:
    """Rows per split (one pass over the id column); an empty split is a UserError before any worker starts."""
    id_column = spec.train_table.id_column
    if id_column is None:
        raise UserError(f"table '{spec.data.train_table}' needs an id_column: rows are split by a hash of their id")
    counts = dataset.select_columns([id_column]).map_batches(
        _split_counts, batch_format="pyarrow", fn_kwargs={"id_column": id_column, "split": spec.train.split})
    per_block = counts.take_all()  # one small row per block
    sizes = {name: sum(int(row[name]) for row in per_block) for name in SPLITS}
    empty = [name for name, rows in sizes.items() if rows == 0]
    if empty:
        raise UserError(f"table '{spec.data.train_table}' leaves the {' and '.join(empty)} split(s) empty "
                        f"({sum(sizes.values())} rows; train.split is {spec.train.split.model_dump()}): add rows")
    return sizes


def split_datasets(dataset, fitted: FittedFeatures, labels: LabelEncoding, spec: ProjectSpec) -> dict:
    """Ray Datasets of model inputs for train, validation and test."""
    id_column = spec.train_table.id_column
    return {name: dataset.map_batches(model_inputs, batch_format="pyarrow", fn_kwargs={
        "fitted": fitted, "labels": labels, "id_column": id_column, "split": spec.train.split, "keep": index})
        for index, name in enumerate(SPLITS)}


@dataclass
class Prepared:
    """A pinned, validated snapshot with its features, labels and split datasets."""

    table_version: int
    table_uri: str
    fitted: FittedFeatures
    labels: LabelEncoding
    datasets: dict
    raw: object  # the snapshot as a Ray Dataset, raw columns
    split_rows: dict[str, int]  # rows per split (labelled or not)
