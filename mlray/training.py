"""Training as the CLI, the jobs, the demo and the retraining job run it: train (or sweep), register and gate, then
the control plane admits a version the gate passed (champion when there is none, else challenger), audited.

Training itself (`mlray.train`) only registers versions and records the gate's decision: moving an alias is the
control plane's, so the champion has one writer.
"""

from __future__ import annotations

from dataclasses import replace

from mlray.audit import default_actor
from mlray.serve import control
from mlray.spec import ProjectSpec
from mlray.train.run import TrainOutcome, train_model
from mlray.train.sweep import SweepOutcome, tune_model


def admitted(spec: ProjectSpec, outcome: TrainOutcome, actor: str | None = None) -> TrainOutcome:
    """`outcome` with its decision made a role: a passed version is admitted by the control plane."""
    if outcome.decision != "passed":
        return outcome
    role = control.client(spec).admit(outcome.model_version, actor or default_actor())
    return replace(outcome, decision=role)


def train(spec: ProjectSpec, actor: str | None = None, **options) -> TrainOutcome:
    """`train_model(spec, **options)`, then the version admitted."""
    return admitted(spec, train_model(spec, **options), actor)


def tune(spec: ProjectSpec, actor: str | None = None, **options) -> SweepOutcome:
    """`tune_model(spec, **options)`, then its best version admitted."""
    outcome = tune_model(spec, **options)
    return replace(outcome, model=admitted(spec, outcome.model, actor))
