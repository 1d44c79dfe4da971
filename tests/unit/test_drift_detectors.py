"""The Alibi detectors on a hand-made reference (no Ray, no registry): the encodings, the corrected threshold, the
score and multivariate tests; and the alert hook's webhook."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pyarrow as pa
import pytest

from mlray.features.fitted import FittedCategorical, FittedFeatures, FittedNumeric
from mlray.monitor.alerts import alert
from mlray.monitor.detectors import Detectors
from mlray.monitor.reference import ColumnEncoding, Reference, encode_columns
from mlray.spec import MonitorSpec

COUNTRIES = ["US", "GB", "DE", "FR"]


def sample(rows: int, seed: int, shift: float = 0.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    weights = np.array([0.55, 0.2, 0.15, 0.1]) if not shift else np.array([0.2, 0.2, 0.2, 0.4])
    return pa.table({"amount": rng.lognormal(3.5 + shift, 0.8, rows),
                     "country": rng.choice(COUNTRIES, rows, p=weights),
                     "card_present": rng.random(rows) < 0.7 - 0.4 * shift})


def reference(rows: int = 1000) -> Reference:
    table = sample(rows, seed=0)
    fitted = FittedFeatures(features=[
        FittedNumeric(name="amount", source="amount", log1p=True, mean=3.5, std=0.8),
        FittedCategorical(name="country", source="country", value_type="string", vocabulary=COUNTRIES[:3])])
    encodings = [ColumnEncoding("amount", "numeric", fill=33.0), ColumnEncoding("country", "categorical", ("US", "GB", "DE")),
                 ColumnEncoding("card_present", "categorical", ("false", "true"))]
    scores = 1 / (1 + np.exp(-(np.log(table.column("amount").to_numpy()) - 4)))
    return Reference("1", "binary", [False, True], 0.5, encodings, encode_columns(encodings, table), scores,
                     {"roc_auc": 0.9}, fitted, table)


def window_scores(table: pa.Table) -> np.ndarray:
    return 1 / (1 + np.exp(-(np.log(table.column("amount").to_numpy()) - 4)))


def test_categories_encode_through_the_vocabulary_with_one_bucket_for_the_rest():
    country = ColumnEncoding("country", "categorical", ("US", "GB", "DE"))
    assert country.encode(pa.array(["GB", "FR", None, "US"])).tolist() == [2.0, 0.0, 0.0, 1.0]
    flag = ColumnEncoding("card_present", "categorical", ("false", "true"))
    assert flag.encode(pa.array([True, False, None])).tolist() == [2.0, 1.0, 0.0]
    amount = ColumnEncoding("amount", "numeric", fill=7.0)
    assert amount.encode(pa.array([1.5, None], pa.float64())).tolist() == [1.5, 7.0]


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
def test_the_same_distribution_passes_and_a_moved_one_is_caught_column_by_column(correction):
    detectors = Detectors(reference(), MonitorSpec(p_value=0.01, correction=correction))
    calm = sample(500, seed=1)
    quiet = detectors.check(calm, window_scores(calm))
    assert quiet.drifted == [] and not quiet.score_drift and quiet.threshold <= 0.01
    moved = sample(500, seed=2, shift=1.0)
    found = detectors.check(moved, window_scores(moved))
    assert found.drifted == ["amount", "country", "card_present"] and found.score_drift
    assert all(p < found.threshold for p in found.p_values) and found.score_p_value < 0.01


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
def test_the_scipy_detectors_give_alibis_answers(correction):
    """`monitor.detectors: scipy` runs the same tests without alibi-detect: the same p-values, distances and verdicts."""
    alibi = Detectors(reference(), MonitorSpec(p_value=0.01, correction=correction))
    scipy = Detectors(reference(), MonitorSpec(p_value=0.01, correction=correction, detectors="scipy"))
    for window in (sample(500, seed=1), sample(300, seed=2, shift=0.3), sample(500, seed=3, shift=1.0)):
        ours, theirs = (d.check(window, window_scores(window)) for d in (scipy, alibi))
        assert ours.p_values == pytest.approx(theirs.p_values, rel=1e-6, abs=1e-9)
        assert ours.distances == pytest.approx(theirs.distances, rel=1e-6)
        assert (ours.drifted, ours.score_drift) == (theirs.drifted, theirs.score_drift)
        assert ours.score_p_value == pytest.approx(theirs.score_p_value, rel=1e-6, abs=1e-9)
    assert scipy.check(window, window_scores(window)).drifted == ["amount", "country", "card_present"]


def test_the_fdr_threshold_is_alibis_without_alibi():
    from alibi_detect.utils.statstest import fdr

    from mlray.monitor.detectors import fdr_threshold

    rng = np.random.default_rng(3)
    for n in (2, 5, 20):
        for _ in range(50):
            p_values = rng.random(n) ** rng.uniform(1, 6)  # from calm to many small p-values
            drifted, threshold = fdr(p_values, q_val=0.05)
            assert fdr_threshold(p_values, 0.05) == pytest.approx(float(threshold) if drifted else 0.05 / n)


def test_the_multivariate_test_needs_alibi():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="multivariate: true needs detectors: alibi"):
        MonitorSpec(multivariate=True, detectors="scipy")


def test_calm_windows_get_a_score_drift_at_most_half_the_verdicts_false_alarm_budget():
    """The score test runs at half of `monitor.p_value`: with the class-share test and two columns at once, a calm
    window's verdict is drift about `p_value` of the time, not more."""
    detectors = Detectors(reference(20_000), MonitorSpec(p_value=0.05))
    calm = window_scores(sample(400 * 200, seed=5)).reshape(400, 200)
    flagged = np.mean([detectors.scores.predict(scores.reshape(-1, 1))["data"]["is_drift"] for scores in calm])
    assert flagged <= 0.05 / 2 + 0.015  # 0.025 expected; 1.9 standard errors of 400 windows above it
    shifted = window_scores(sample(200, seed=6, shift=0.5))
    assert detectors.scores.predict(shifted.reshape(-1, 1))["data"]["is_drift"]


def test_multivariate_drift_is_an_mmd_test_on_the_transformed_inputs():
    spec = MonitorSpec(multivariate=True, mmd_reference_rows=100, mmd_permutations=20, p_value=0.05)
    detectors = Detectors(reference(300), spec)
    moved = sample(100, seed=3, shift=1.0)
    found = detectors.check(moved, window_scores(moved))
    assert found.mmd_drift and found.mmd_p_value <= 0.05


def test_an_alert_is_posted_to_the_webhook_and_a_dead_webhook_is_only_logged(caplog):
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.handle_request, daemon=True).start()
    alert("card-fraud", "drift", "window 3 drifted", {"seq": 3}, f"http://127.0.0.1:{server.server_port}/hook")
    server.server_close()
    assert received and received[0]["kind"] == "drift" and received[0]["details"] == {"seq": 3}
    alert("card-fraud", "drift", "again", webhook=f"http://127.0.0.1:{server.server_port}/hook")  # nobody listens
    assert "alert webhook" in caplog.text and "mlray alert [card-fraud] drift: again" in caplog.text


def test_an_integer_beyond_2_to_the_53_is_encoded_not_an_error_that_stops_every_window():
    amount = ColumnEncoding("tx_count_1h", "numeric", fill=0.0)
    assert amount.encode(pa.array([32425848875890160, 3], pa.int64())).tolist() == [32425848875890160.0, 3.0]
