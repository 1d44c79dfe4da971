"""Features fitted with Ray Data and applied through Ray Data equal the in-process path, byte for byte."""

import numpy as np
import pytest

from mlray import dataplane
from mlray.errors import UserError
from mlray.features import fit, transform, transform_dataset
from mlray.lake.synthetic import Shift, generate_transactions


@pytest.fixture
def loaded(project, load_transactions):
    return project, load_transactions(4000, seed=21)


def test_distributed_fit_equals_in_process_fit(loaded):
    project, lake = loaded
    fitted = dataplane.fit_features(project)
    local = fit(lake.read("transactions", 1), project.features)
    assert fitted.version == local.version
    assert fitted.lineage.table_version == 1 and fitted.lineage.rows == 4000
    assert dataplane.feature_store(project).load().version == fitted.version


def test_transform_through_ray_data_is_byte_identical(loaded):
    project, lake = loaded
    fitted = dataplane.fit_features(project)
    ids = ("transaction_id",)
    through_ray = transform_dataset(lake.dataset("transactions", 1), fitted, keep=ids, batch_size=700).take_all()
    by_id = {row["transaction_id"]: row for row in through_ray}
    table = lake.read("transactions", 1)
    direct = transform(table, fitted)
    assert len(by_id) == table.num_rows
    for i, tx in enumerate(table.column("transaction_id").to_pylist()):
        assert by_id[tx]["numeric"].tobytes() == direct["numeric"][i].tobytes()
        assert by_id[tx]["categorical"].tobytes() == direct["categorical"][i].tobytes()


def test_feature_version_changes_only_with_data_or_definitions(loaded):
    project, lake = loaded
    first = dataplane.fit_features(project)
    assert dataplane.fit_features(project, version=1).version == first.version
    lake.append("transactions", generate_transactions(2000, seed=22, shift=Shift(covariate=0.8), id_prefix="shifted"),
                batch_id="b")
    assert dataplane.fit_features(project).version != first.version
    assert dataplane.fit_features(project, version=1).version == first.version  # pinned: same as before


def test_fitting_refuses_a_table_that_fails_validation(loaded):
    project, lake = loaded
    lake.append("transactions", lake.read("transactions").slice(0, 2), batch_id="dupes")
    with pytest.raises(UserError, match="fails 1 of .* checks: transaction_id: unique"):
        dataplane.fit_features(project)
    assert dataplane.fit_features(project, require_valid=False).lineage.table_version == 2


def test_outputs_are_finite(loaded):
    project, lake = loaded
    fitted = dataplane.fit_features(project)
    out = transform(lake.read("transactions"), fitted)
    assert np.isfinite(out["numeric"]).all()
    assert (out["categorical"] >= 0).all() and (out["categorical"] < np.array(fitted.cardinalities)).all()
