"""The small interfaces the control plane talks through, so its transitions run on in-memory fakes in unit tests and
on the lake, the audit table and MLflow in the actor."""

from __future__ import annotations

from typing import Protocol


class StateStore(Protocol):
    """One document with a revision, changed with a compare-and-swap (`mlray.lake.state.StateTable`)."""

    def read(self) -> tuple[int, dict | None]: ...

    def write(self, document: dict, expected: int, writer: str = "") -> int:
        """The new revision; raises `StateConflict` when the latest revision is not `expected`."""


class AuditSink(Protocol):
    """The audit trail's hash chain (`mlray.audit.AuditLog`); the principal is found in the writing process unless
    given (the control plane gives its caller's)."""

    def append(self, action: str, target: str, reason: str = "", before=None, after=None,
               component: str | None = None, *, principal: str | None = None, id: str | None = None) -> object: ...

    def record(self, entry: dict) -> object:
        """Chain an entry made by `mlray.audit.new_entry`, unless its id is in the chain already."""


class ModelRegistry(Protocol):
    """What the control plane asks of the model registry (`mlray.registry.models.Registry`)."""

    model_name: str

    def version_of(self, alias: str) -> str | None: ...

    def resolve(self, reference: str) -> tuple[str, str]:
        """(model name, version) of a version number or alias; a `UserError` for one that does not exist."""

    def artifact_uri(self, name: str, version: str) -> str: ...

    def project_aliases(self, aliases: dict[str, str | None]) -> list[str]:
        """Make the registry's aliases these (None: no such alias); what it had to change."""

    def tag_version(self, version: str, key: str, value: str) -> None: ...


class ServingView(Protocol):
    """What a loop that watches serving needs to know of the control plane's state: who is champion (the version
    whose traffic the plan sends first) and the rollout, as last committed or pushed."""

    def champion(self) -> str | None: ...

    def rollout(self) -> dict | None: ...


class JobSubmitter(Protocol):
    """Where the monitor submits an incident's retraining job and asks how it went (`mlray.monitor.jobs.RayJobs`: the
    Ray Jobs API)."""

    def submit(self, incident_id: str) -> tuple[str, bool]:
        """(submission id, whether this call submitted it): the id derives from the incident, so a second call names
        the job the first submitted."""

    def status(self, submission_id: str) -> str | None:
        """'PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'STOPPED', ..., or None when there is no such job."""
