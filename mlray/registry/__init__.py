"""MLflow tracking, the model package, the registry's aliases and the promotion gate."""
