"""The data-plane stages as the CLI and `ray job submit` entrypoints run them.

Each function takes the spec, joins `lake` and `features`, and returns a result to render;
none of them prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from mlray.errors import UserError
from mlray.features import FeatureStore, FittedFeatures, Lineage, fit
from mlray.features.fit import feature_reducer, fitted_from_partials
from mlray.lake import Lake
from mlray.lake.ingest import FileResult, IngestReport, ingest
from mlray.lake.validate import ValidationReport, validate, validate_and_reduce

__all__ = ["fit_features", "ingest_source", "lake_of", "validate", "validate_and_fit", "validate_table"]
from mlray.spec import Feature, ProjectSpec, TableSpec


def lake_of(spec: ProjectSpec) -> Lake:
    return Lake.from_platform(spec.platform)


def feature_store(spec: ProjectSpec) -> FeatureStore:
    return FeatureStore(Path(spec.platform.state_dir) / "features")


def ingest_source(spec: ProjectSpec, source: str | Path, table: str | None = None,
                  on_file: Callable[[FileResult], None] | None = None) -> IngestReport:
    name = table or spec.data.train_table
    return ingest(lake_of(spec), name, spec.data.table(name), source, on_file=on_file)


def validate_table(spec: ProjectSpec, table: str | None = None, version: int | None = None,
                   write_report: bool = True) -> tuple[ValidationReport, Path | None]:
    name = table or spec.data.train_table
    report = validate(lake_of(spec), name, spec.data.table(name), version)
    path = report.write(spec.platform.reports_dir / "validation") if write_report else None
    return report, path


def validate_and_fit(lake: Lake, name: str, table: TableSpec, features: list[Feature], version: int | None = None,
                     dataset=None) -> tuple[ValidationReport, FittedFeatures | None]:
    """Validate a pinned table version and fit features on it in one pass; no features if it fails."""
    report, partials = validate_and_reduce(lake, name, table, version, reducers={"features": feature_reducer(features)},
                                           dataset=dataset)
    if not report.passed:
        return report, None
    lineage = Lineage(table=name, table_uri=lake.uri(name), table_version=report.version)
    return report, fitted_from_partials(features, partials["features"], lineage)


def fit_features(spec: ProjectSpec, version: int | None = None, require_valid: bool = True,
                 dataset=None) -> FittedFeatures:
    """Fit the spec's features on a pinned version of the train table, refusing one that fails validation.

    `dataset` may be that version already opened with `Lake.dataset`, for a caller that reads it again."""
    name = spec.data.train_table
    lake = lake_of(spec)
    if require_valid:
        report, fitted = validate_and_fit(lake, name, spec.train_table, spec.features, version, dataset)
        path = report.write(spec.platform.reports_dir / "validation")
        if fitted is None:
            raise UserError(f"{report.summary()}; see {path}")
    else:
        pinned = lake.open(name, version).version()
        sources = list(dict.fromkeys(f.source for f in spec.features))
        lineage = Lineage(table=name, table_uri=lake.uri(name), table_version=pinned)
        fitted = fit((dataset or lake.dataset(name, pinned)).select_columns(sources), spec.features, lineage)
    feature_store(spec).save(fitted)
    return fitted
