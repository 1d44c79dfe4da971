"""The MLflow Model Registry for one project: versions, the champion/challenger/previous aliases, decisions."""

from __future__ import annotations

import logging
from functools import cached_property

from mlflow.exceptions import MlflowException

from mlray.control.state import ALIAS_NAMES as ALIASES
from mlray.errors import UserError
from mlray.redaction import redact_credentials
from mlray.registry.gate import GateDecision
from mlray.registry.manifest import MANIFEST_TAG, pinned_uri, unpin
from mlray.registry.tracking import experiment_id, tracking_client
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)
REJECTED_TAG = "mlray.rejected"


class Registry:
    """Made without asking the store anything (a long-lived actor makes one while MLflow is down); calls ask it."""

    def __init__(self, spec: ProjectSpec):
        self.model_name, self.platform = spec.name, spec.platform
        self.client = tracking_client(spec.platform)

    @cached_property
    def experiment_id(self) -> str:
        return experiment_id(self.client, self.platform, self.model_name)

    def run_for(self, run_name: str) -> str | None:
        """An unfinished run with this name (a re-submission resumes it), else None."""
        runs = self.client.search_runs([self.experiment_id], filter_string=f"attributes.run_name = '{run_name}'",
                                       max_results=5)
        unfinished = [r for r in runs if r.info.status != "FINISHED"]
        return unfinished[0].info.run_id if unfinished else None

    def version_of(self, alias: str) -> str | None:
        """The version `alias` points at; None only when the registry says there is no such alias (or model).
        Any other failure raises RegistryUnavailable: a flaky tracking server must never look like 'no champion'."""
        try:
            return str(self.client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException as exc:
            if _is_missing(exc):
                return None
            raise RegistryUnavailable(f"the model registry at {self.client.tracking_uri} did not say which version "
                                      f"'{alias}' is: {str(exc).splitlines()[0]}") from exc

    def uri(self, reference: str) -> str:
        """'models:/…' for 'NAME@alias', 'NAME/version', an alias or a version number of this project."""
        if reference.startswith("models:/"):
            return reference
        if "@" in reference or "/" in reference:
            return f"models:/{reference}"
        if reference.isdigit():
            return f"models:/{self.model_name}/{reference}"
        return f"models:/{self.model_name}@{reference}"

    def load(self, reference: str):
        """The verified package (`load_package`) of 'NAME@alias', 'NAME/version', an alias or a version number."""
        from mlray.registry.package import load_package  # heavy: torch (the network); the registry's other calls skip it

        try:
            return load_package(self.uri(reference), self.client)
        except MlflowException as exc:
            raise _not_found(reference, exc) from None

    def resolve(self, reference: str) -> tuple[str, str]:
        """(model name, version) a reference points at now: an alias is read once, so it cannot move under a job."""
        path = self.uri(reference).removeprefix("models:/")
        try:
            if "@" in path:
                name, alias = path.rsplit("@", 1)
                found = self.client.get_model_version_by_alias(name, alias)
            else:
                name, _, version = path.rpartition("/")
                found = self.client.get_model_version(name, version)
        except MlflowException as exc:
            raise _not_found(reference, exc) from None
        return found.name, str(found.version)

    def artifact_uri(self, name: str, version: str) -> str:
        """Where a version's package lives, pinned to its manifest's digest: loading from there needs no registry
        lookup (what workers do). PackageUnverified for a version registered without the digest."""
        return pinned_uri(self.client, self.client.get_model_version(name, version))

    def register_package(self, pinned: str) -> str:
        """Register the package at a pinned location (another version's `artifact_uri`) as a new version of this
        project's model, tagged with the manifest digest it is pinned to; the new version's number."""
        location, digest, _ = unpin(pinned)
        return str(self.client.create_model_version(self.model_name, location, tags={MANIFEST_TAG: digest}).version)

    def test_metrics(self, version: str) -> dict[str, float]:
        """The held-out test metrics recorded when `version` was trained, without the `test_` prefix."""
        run_id = self.client.get_model_version(self.model_name, version).run_id
        metrics = self.client.get_run(run_id).data.metrics if run_id else {}
        return {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")}

    def project_aliases(self, aliases: dict[str, str | None]) -> list[str]:
        """Make the registry's aliases `aliases` (None: the alias is removed); the changes it made, as 'alias: a → b'.

        Only the control plane calls this: its state is the record, MLflow's aliases are the projection."""
        changes = []
        for alias, wanted in aliases.items():
            if alias not in ALIASES:
                raise UserError(f"alias {alias!r} is not one of {', '.join(ALIASES)}")
            current = self.version_of(alias)
            if current == wanted:
                continue
            if wanted is None:
                self.client.delete_registered_model_alias(self.model_name, alias)
            else:
                self.client.set_registered_model_alias(self.model_name, alias, wanted)
            changes.append(f"{alias}: {current} → {wanted}")
        return changes

    def tag_version(self, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(self.model_name, version, key, value)

    def record_decision(self, version: str, decision: GateDecision) -> str:
        """The gate's decision on a version: 'passed', or 'rejected' and tagged with the reason. Making a passed
        version champion or challenger is the control plane's move (`ControlPlane.admit`)."""
        if not decision.passed:
            self.tag_version(version, REJECTED_TAG, decision.summary)
            return "rejected"
        return "passed"

    def versions(self) -> list[dict]:
        aliases_of: dict[str, list[str]] = {}
        for alias in ALIASES:
            version = self.version_of(alias)
            if version is not None:
                aliases_of.setdefault(version, []).append(alias)
        found = []
        for mv in self.client.search_model_versions(f"name = '{self.model_name}'"):
            run = self.client.get_run(mv.run_id) if mv.run_id else None
            metrics = {k: v for k, v in (run.data.metrics if run else {}).items() if k.startswith("test_")}
            found.append({"version": str(mv.version), "aliases": aliases_of.get(str(mv.version), []),
                          "rejected": mv.tags.get(REJECTED_TAG), "run_id": mv.run_id,
                          "table_version": run.data.tags.get("mlray.table_version") if run else None,
                          "feature_version": run.data.tags.get("mlray.feature_version") if run else None,
                          "metrics": metrics, "created": mv.creation_timestamp})
        return sorted(found, key=lambda v: int(v["version"]), reverse=True)


class RegistryUnavailable(RuntimeError):
    """The registry failed to answer (not: answered that something is missing). Its message names the registry
    without a password: it reaches incidents, the audit log and alerts."""

    def __init__(self, message: object = "", *args):
        super().__init__(redact_credentials(str(message)), *args)


def _is_missing(exc: MlflowException) -> bool:
    """MLflow's answer for a missing model, or for a missing alias of an existing one."""
    code = getattr(exc, "error_code", "")
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "alias" in str(exc).lower()
                                                 and "not found" in str(exc).lower())


def _not_found(reference: str, exc: MlflowException) -> UserError:
    return UserError(f"model {reference!r} not found in the registry ({str(exc).splitlines()[0]})")
