"""The pyfunc flavour of a model package, logged as code (MLflow's models-from-code): nothing of it is pickled."""

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from mlray.registry.package import TabularPackage


class PackageModel(PythonModel):
    """Reads the package's JSON and tensors as mlray does and predicts from raw rows."""

    def load_context(self, context) -> None:
        self.package = TabularPackage.from_bytes({k: Path(v).read_bytes() for k, v in context.artifacts.items()})

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.package.predict(model_input)


mlflow.models.set_model(PackageModel())
