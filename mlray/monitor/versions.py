"""Every served version watched, not only the champion: a challenger's or a shadow's scores in a window are tested
against its own reference sample's scores (matched to the window's periods like the champion's), and its quality is
estimated before labels from its own calibrator.

A version's reference is loaded the first time it serves in a window (from its package in the registry) and kept while
it keeps serving; one that stopped serving is forgotten. A version whose reference cannot be loaded (a package of an
older mlray, the registry down) is reported with the reason instead of failing the window: the champion's checks do
not wait on a challenger.
"""

from __future__ import annotations

import logging
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from mlray.lake.inference import flat_inputs
from mlray.monitor.context import Context
from mlray.monitor.detectors import Detectors
from mlray.monitor.estimated import estimate_window, logged_probabilities
from mlray.monitor.reference import Reference
from mlray.spec import MonitorSpec

log = logging.getLogger(__name__)


class ServedVersions:
    """The score tests and estimates of the versions other than the champion that served in a window."""

    def __init__(self, rules: MonitorSpec, context: Context | None, load: Callable[[str], Reference],
                 make_detectors: Callable[..., Detectors] = Detectors):
        self.rules, self.context, self.load, self.make_detectors = rules, context, load, make_detectors
        self.detectors: dict[str, Detectors] = {}

    def check(self, served: pa.Table, champion: str, seed: int = 0) -> dict[str, dict]:
        """Version → its checks in this window: rows answered (or mirrored, `shadow`), the score test against its own
        reference, and its quality estimated before labels."""
        versions = sorted(set(served.column("model_version").to_pylist()) - {champion})
        self.detectors = {v: d for v, d in self.detectors.items() if v in versions}
        return {version: self._check(version, served.filter(pc.equal(served.column("model_version"), version)), seed)
                for version in versions}

    def _check(self, version: str, rows: pa.Table, seed: int) -> dict:
        shadow = bool(pc.all(rows.column("shadow")).as_py())
        out = {"rows": rows.num_rows, "shadow": shadow}
        try:
            detectors = self._detectors(version)
        except Exception as error:  # noqa: BLE001 - a challenger's missing reference must not stop the champion's checks
            log.warning("v%s's reference could not be loaded: its scores are not checked (%s)", version, error)
            return out | {"error": f"{type(error).__name__}: {error}"[:300]}
        scores = rows.column("score").to_numpy(zero_copy_only=False).astype(float)
        test = detectors.check_scores(scores, flat_inputs(rows))
        estimates = estimate_window(detectors.reference, scores, seed=seed, probabilities=logged_probabilities(rows))
        return out | {"score_p_value": test.p_value, "score_drift": test.drift, "estimated": estimates.quality,
                      "priors": estimates.priors}

    def _detectors(self, version: str) -> Detectors:
        if version not in self.detectors:
            self.detectors[version] = self.make_detectors(self.load(version), self.rules, context=self.context)
        return self.detectors[version]

