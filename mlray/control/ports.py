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
    def append(self, action: str, target: str, reason: str = "", before=None, after=None,
               actor: str | None = None) -> object: ...


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
