"""Every served version watched: a challenger's and a shadow's scores against their own references (no Ray, no
registry: hand-made references), and the MMD p-value with the observed statistic counted in."""

import numpy as np
import pyarrow as pa
from test_drift_detectors import reference, sample, window_scores

from mlray.monitor.detectors import permutation_p_value
from mlray.monitor.versions import ServedVersions
from mlray.spec import MonitorSpec


def served(rows: pa.Table, version: str, scores: np.ndarray, shadow: bool = False) -> pa.Table:
    n = rows.num_rows
    return pa.table({"model_version": [version] * n, "shadow": [shadow] * n, "score": scores,
                     "inputs": [{"amount": a, "country": c, "card_present": p} for a, c, p in
                                zip(*(rows.column(k).to_pylist() for k in ("amount", "country", "card_present")))]})


class References:
    def __init__(self, missing: tuple[str, ...] = ()):
        self.loaded, self.missing = [], missing

    def __call__(self, version: str):
        self.loaded.append(version)
        if version in self.missing:
            raise FileNotFoundError(f"no package for v{version}")
        return reference()


def test_a_challenger_is_judged_against_its_own_reference_and_a_shadow_too():
    references = References()
    versions = ServedVersions(MonitorSpec(p_value=0.01), None, references)
    calm, moved = sample(500, seed=3), sample(500, seed=4)
    window = pa.concat_tables([served(calm, "1", window_scores(calm)),  # the champion: not checked here
                               served(calm, "2", window_scores(calm)),
                               served(moved, "3", np.clip(window_scores(moved) + 0.3, 0, 1), shadow=True)])
    found = versions.check(window, champion="1")
    assert set(found) == {"2", "3"} and references.loaded == ["2", "3"]
    assert found["2"]["rows"] == 500 and not found["2"]["shadow"] and not found["2"]["score_drift"]
    assert found["3"]["shadow"] and found["3"]["score_drift"] and found["3"]["score_p_value"] < 0.01


def test_references_are_kept_while_a_version_serves_and_forgotten_after():
    references = References()
    versions = ServedVersions(MonitorSpec(), None, references)
    calm = sample(200, seed=5)
    for _ in range(3):
        versions.check(served(calm, "2", window_scores(calm)), champion="1")
    assert references.loaded == ["2"]
    versions.check(served(calm, "1", window_scores(calm)), champion="1")
    assert versions.detectors == {}


def test_a_version_whose_reference_cannot_load_is_reported_with_the_reason_not_raised():
    versions = ServedVersions(MonitorSpec(), None, References(missing=("2",)))
    calm = sample(200, seed=6)
    found = versions.check(served(calm, "2", window_scores(calm)), champion="1")
    assert found["2"]["rows"] == 200 and found["2"]["error"] == "FileNotFoundError: no package for v2"
    assert "score_drift" not in found["2"]


def test_the_mmd_p_value_counts_the_observed_statistic_in():
    # alibi's k/n: 0 of 100 permutations as large gives 0; counted in, the smallest possible p-value is 1/101
    assert permutation_p_value(0.0, 100) == 1 / 101
    assert permutation_p_value(0.05, 100) == 6 / 101
    assert permutation_p_value(1.0, 100) == 1.0
