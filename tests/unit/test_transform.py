import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlray.errors import UserError
from mlray.features import fit, transform
from mlray.features.fitted import FeatureStore, FittedFeatures
from mlray.spec import parse_spec

SPEC = """
name: houses
data:
  label_column: price
  tables:
    sales:
      columns: {sqft: float, rooms: int, city: string, garden: bool, sold_at: timestamp, price: float}
features:
  - {name: sqft, kind: numeric, log1p: true}
  - {name: sqft_band, column: sqft, kind: numeric, bucketize: {boundaries: [50, 100, 200]}}
  - {name: rooms, kind: numeric, default: median}
  - {name: city, kind: categorical, top_k: 2, default: Paris}
  - {name: garden, kind: boolean, default: false}
  - {name: sold_at, kind: timestamp, parts: [hour, weekday, month]}
"""


@pytest.fixture
def features():
    return parse_spec(SPEC).features


@pytest.fixture
def data():
    return pa.table({
        "sqft": [40.0, 80.0, 120.0, 250.0, 90.0, 60.0],
        "rooms": [1, 2, 3, 5, None, 2],
        "city": ["Paris", "Lyon", "Paris", "Nice", "Lyon", "Paris"],
        "garden": [True, False, None, True, False, False],
        "sold_at": pa.array(pd.to_datetime(["2024-01-01 10:00", "2024-01-02 23:30", "2024-03-03 00:00",
                                            "2024-06-04 12:00", "2024-07-05 06:00", "2024-12-06 18:00"], utc=True)),
        "price": [1.0, 2, 3, 4, 5, 6],
    })


def test_fit_learns_the_statistics(features, data):
    fitted = fit(data, features)
    sqft = fitted.features[0]
    logged = np.log1p(data.column("sqft").to_numpy())
    assert sqft.mean == pytest.approx(logged.mean()) and sqft.std == pytest.approx(logged.std())
    assert fitted.features[2].fill == pytest.approx(2.0, abs=0.01)  # median of 1, 2, 2, 3, 5
    city = fitted.features[3]
    assert city.vocabulary == ["Paris", "Lyon"]  # top 2 by count; Nice falls out of vocabulary
    assert fitted.numeric_names == ["sqft", "rooms", "garden"]
    assert fitted.categorical_names == ["sqft_band", "city", "sold_at_hour", "sold_at_weekday", "sold_at_month"]
    assert fitted.cardinalities == [4, 3, 24, 7, 12]


def test_transform_outputs(features, data):
    fitted = fit(data, features)
    out = transform(data, fitted)
    assert out["numeric"].dtype == np.float32 and out["numeric"].shape == (6, 3)
    assert out["categorical"].dtype == np.int64 and out["categorical"].shape == (6, 5)
    cat = out["categorical"]
    assert cat[:, 0].tolist() == [0, 1, 2, 3, 1, 1]  # sqft bands
    assert cat[:, 1].tolist() == [1, 2, 1, 0, 2, 1]  # Nice → out-of-vocabulary 0
    assert cat[:, 2].tolist() == [10, 23, 0, 12, 6, 18]
    assert cat[:, 3].tolist() == [0, 1, 6, 1, 4, 4]  # Monday = 0
    assert cat[:, 4].tolist() == [0, 0, 2, 5, 6, 11]
    assert out["numeric"][2, 2] == 0.0  # missing garden → declared default False
    assert np.isclose(out["numeric"][:, 0].mean(), 0, atol=1e-6)


def test_same_output_from_arrow_pandas_and_dicts(features, data):
    fitted = fit(data, features)
    arrow = transform(data, fitted)
    frame = transform(data.to_pandas(), fitted)
    rows = transform({name: data.column(name).to_pylist() for name in data.column_names}, fitted)
    for other in (frame, rows):
        assert other["numeric"].tobytes() == arrow["numeric"].tobytes()
        assert other["categorical"].tobytes() == arrow["categorical"].tobytes()


def test_unseen_category_and_missing_values(features, data):
    fitted = fit(data, features)
    row = data.slice(0, 1).to_pylist()[0]
    unseen = transform(pa.Table.from_pylist([{**row, "city": "Tokyo"}]), fitted)
    assert unseen["categorical"][0, 1] == 0
    missing_city = transform(pa.Table.from_pylist([{**row, "city": None}]), fitted)
    assert missing_city["categorical"][0, 1] == 1  # default Paris
    with pytest.raises(UserError, match="feature 'sqft': 1 missing value.*no default declared"):
        transform(pa.Table.from_pylist([{**row, "sqft": None}], schema=data.schema), fitted)
    with pytest.raises(UserError, match="needs column 'city'"):
        transform(data.drop_columns(["city"]), fitted)


def test_feature_version_tracks_definitions_and_statistics(features, data, tmp_path):
    fitted = fit(data, features)
    assert fit(data, features).version == fitted.version  # refit: same numbers, same version
    changed_data = data.set_column(0, "sqft", pa.array([41.0, 80, 120, 250, 90, 60]))
    assert fit(changed_data, features).version != fitted.version
    changed_spec = parse_spec(SPEC.replace("top_k: 2", "top_k: 3")).features
    assert fit(data, changed_spec).version != fitted.version
    store = FeatureStore(tmp_path)
    store.save(fitted)
    assert store.load().version == fitted.version
    assert FittedFeatures.from_json(fitted.to_json()) == fitted


def test_tampered_feature_file_is_refused(features, data):
    text = fit(data, features).to_json().replace('"Lyon"', '"Lille"')
    with pytest.raises(UserError, match="content hashes to"):
        FittedFeatures.from_json(text)


def test_fit_refuses_empty_and_all_null_columns(features, data):
    with pytest.raises(UserError, match="empty table"):
        fit(data.slice(0, 0), features)
    nulls = data.set_column(1, "rooms", pa.nulls(6, pa.int64()))
    with pytest.raises(UserError, match="feature 'rooms': column 'rooms' has no values"):
        fit(nulls, features)


def test_an_integer_beyond_2_53_is_a_number_in_fitting_and_in_transforming(features, data):
    """Arrow's safe cast refuses an int64 that a float64 cannot hold exactly; a numeric feature takes its nearest
    float instead (a served request with one got a 500 until then)."""
    huge = data.set_column(data.schema.get_field_index("rooms"), "rooms", pa.array([1, 2, 3, 5, 2**53 + 1, 2**62 + 7]))
    fitted = fit(huge, features)
    out = transform(huge.slice(4, 2), fitted)
    assert np.isfinite(out["numeric"]).all()
    assert transform(huge.slice(0, 1), fitted)["numeric"][0, 1] < out["numeric"][0, 1] < out["numeric"][1, 1]
