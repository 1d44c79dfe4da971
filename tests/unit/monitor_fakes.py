"""In-memory stand-ins for the monitor's collaborators (`mlray.control.ports` and the MLflow-backed parts): a clock
moved by hand, the control plane's serving view, the Jobs API, the reference loader, the drift detectors and the
metrics, so `Monitor` runs on a real local lake without Ray, MLflow or Alibi Detect."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from types import SimpleNamespace

from mlray.control.clock import utc_now
from mlray.monitor.detectors import DriftResult, ScoreTest


class FakeClock:
    def __init__(self, at: datetime | None = None):
        self.at = at or utc_now()

    def now(self) -> datetime:
        return self.at

    def advance(self, delta: timedelta) -> None:
        self.at += delta


class FakeServing:
    """The control plane's champion and rollout, set by the test."""

    def __init__(self, champion: str | None = "1", rollout: dict | None = None):
        self.serving_champion, self.current_rollout = champion, rollout

    def champion(self) -> str | None:
        return self.serving_champion

    def rollout(self) -> dict | None:
        return self.current_rollout


class FakeJobs:
    """The Jobs API: a submission id per incident (a second submission names the first job, as Ray refuses it)."""

    def __init__(self):
        self.jobs: dict[str, str] = {}  # submission id → status
        self.submitted: list[str] = []  # the ids actually submitted, in order

    def submit(self, incident_id: str) -> tuple[str, bool]:
        sid = f"retrain-{incident_id}"
        if sid in self.jobs:
            return sid, False
        self.jobs[sid] = "PENDING"
        self.submitted.append(sid)
        return sid, True

    def status(self, submission_id: str) -> str | None:
        return self.jobs.get(submission_id)


class FakeReferences:
    """The reference loader: records which champion's reference was built."""

    def __init__(self):
        self.loaded: list[str] = []

    def __call__(self, spec, version: str):
        self.loaded.append(version)
        return SimpleNamespace(version=version, task="binary", classes=["false", "true"], threshold=0.5, offline={},
                               calibrator=None, confusion=None)


class FakeDrift:
    """The detectors' factory. A window drifts in column `amount` when one of its rows has an amount above
    `SHIFTED` (so checking a window again gives the same verdict), or while `drifting` is set."""

    SHIFTED = 100.0

    def __init__(self):
        self.drifting = False
        self.checked: list[int] = []  # rows of each window checked, in order

    def __call__(self, reference, rules, context=None):
        drift = self

        class Detectors:
            def __init__(self):
                self.reference = reference

            def check(self, inputs, scores, scored=None) -> DriftResult:
                drift.checked.append(inputs.num_rows)
                amounts = [a for a in inputs.column("amount").to_pylist() if a is not None]
                drifted = drift.drifting or any(a > FakeDrift.SHIFTED for a in amounts)
                return DriftResult(["amount"], [0.001 if drifted else 0.5], [0.3], ["amount"] if drifted else [], 0.01)

            def check_scores(self, scores, scored) -> ScoreTest:
                return ScoreTest(0.5, 0.1, False, None)

        return Detectors()


class FakeGauge:
    def __init__(self):
        self.values: list[tuple[float, dict]] = []

    def set(self, value: float, tags: dict) -> None:
        self.values.append((value, tags))

    def inc(self, tags: dict) -> None:
        self.values.append((1.0, tags))


class FakeGauges:
    def __init__(self):
        self.gauges: dict[str, FakeGauge] = defaultdict(FakeGauge)

    def __call__(self) -> dict:
        return self.gauges
