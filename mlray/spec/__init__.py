"""The typed project spec: one YAML file drives every stage, one module per section, and the loader on its own.

Defaults live here and nowhere else. Every model forbids unknown keys, so a typo is
an error naming the file, the line, the key and what was expected.
"""

from mlray.spec.base import (
    DEFAULT_SPEC_FILE,
    ENV_PREFIX,
    NAME_PATTERN,
    NUMERIC_TYPES,
    ORDERED_TYPES,
    ColumnType,
    Duration,
    Section,
    format_duration,
    parse_duration,
)
from mlray.spec.data import ColumnSpec, DataSpec, Expectations, TableSpec
from mlray.spec.features import (
    FEATURE_COLUMN_TYPES,
    BooleanFeature,
    Bucketize,
    CategoricalFeature,
    Feature,
    FeatureBase,
    NumericFeature,
    TimestampFeature,
    TimestampPart,
)
from mlray.spec.loader import env_overrides, format_validation_error, load_spec, parse_spec, starter_spec
from mlray.spec.monitor import ContextSpec, MonitorSpec
from mlray.spec.platform import PlatformSpec
from mlray.spec.project import ProjectSpec
from mlray.spec.rollout import RolloutChecks, RolloutSpec
from mlray.spec.serve import AutoscalingSpec, BatchingSpec, ServeSpec
from mlray.spec.train import EarlyStopping, GateSpec, ModelSpec, SplitSpec, Task, ThresholdTarget, TrainSpec
from mlray.spec.tune import SEARCH_KINDS, TUNABLE_SECTIONS, UNTUNABLE, AshaSpec, TuneSpec

__all__ = [
    "DEFAULT_SPEC_FILE", "ENV_PREFIX", "FEATURE_COLUMN_TYPES", "NAME_PATTERN", "NUMERIC_TYPES", "ORDERED_TYPES",
    "SEARCH_KINDS", "TUNABLE_SECTIONS", "UNTUNABLE", "AshaSpec", "AutoscalingSpec", "BatchingSpec", "BooleanFeature",
    "Bucketize", "CategoricalFeature", "ColumnSpec", "ColumnType", "ContextSpec", "DataSpec", "Duration", "EarlyStopping",
    "Expectations", "Feature", "FeatureBase", "GateSpec", "ModelSpec", "MonitorSpec", "NumericFeature", "PlatformSpec",
    "ProjectSpec", "RolloutChecks", "RolloutSpec", "Section", "ServeSpec", "SplitSpec", "Task", "TableSpec",
    "TimestampFeature", "TimestampPart", "ThresholdTarget", "TrainSpec", "TuneSpec", "env_overrides", "format_duration",
    "format_validation_error", "load_spec", "parse_duration", "parse_spec", "starter_spec",
]
