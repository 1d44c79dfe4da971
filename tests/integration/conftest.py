import pytest

from mlray import dataplane
from mlray.lake.schema import arrow_schema
from mlray.lake.synthetic import generate_transactions


@pytest.fixture(autouse=True)
def _ray(ray_session):
    return ray_session


@pytest.fixture
def load_transactions(project):
    """Append `rows` synthetic transactions to the project's train table; returns the Lake."""
    lake = dataplane.lake_of(project)

    def load(rows: int, seed: int):
        lake.append("transactions", generate_transactions(rows, seed=seed), batch_id=f"seed-{seed}",
                    schema=arrow_schema(project.train_table))
        return lake

    return load
