"""Features declared once in the spec, fitted with Ray Data, applied by one transform everywhere."""

from mlray.features.fit import fit
from mlray.features.fitted import FeatureStore, FittedFeatures, Lineage
from mlray.features.transform import transform, transform_dataset

__all__ = ["FeatureStore", "FittedFeatures", "Lineage", "fit", "transform", "transform_dataset"]
