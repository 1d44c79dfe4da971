"""Specs kept under the lake root, so a job or an actor on any node reads the spec it is to run on, and what is
passed around is only where that is, never the spec itself (a runtime env is shown by the Jobs API and the
dashboard).

What is stored is the redacted document (`mlray.spec.secrets`), named by its content's digest: storing it twice
writes the same file. A job reads it with its node's own credentials; a long-lived actor (`LiveSpec`) moving to a
new revision keeps the secrets of the spec it already holds where the stored copy hid the same values.
"""

from __future__ import annotations

import hashlib
import json
import logging

import pyarrow as pa
from pydantic import ValidationError

from mlray.errors import UserError
from mlray.lake.io import filesystem_of
from mlray.lake.tables import Lake
from mlray.spec import ProjectSpec
from mlray.spec.loader import format_validation_error
from mlray.spec.secrets import redacted_document, restored, without_redacted

log = logging.getLogger(__name__)
SPECS_FOLDER = "_mlray/specs"


def _stored_text(spec: ProjectSpec) -> str:
    return json.dumps(redacted_document(spec), indent=1)  # in the spec's order: a table's columns keep theirs


def spec_digest(spec: ProjectSpec) -> str:
    """What names a spec revision: the digest of its redacted document (a literal secret changed alone keeps it)."""
    return hashlib.sha256(_stored_text(spec).encode()).hexdigest()[:24]


def store_spec(lake: Lake, spec: ProjectSpec) -> str:
    """Write the spec's redacted document under the lake root; its URI."""
    name = f"{SPECS_FOLDER}/{spec_digest(spec)}.json"
    fs, root = lake.filesystem()
    fs.create_dir(f"{root.rstrip('/')}/{SPECS_FOLDER}", recursive=True)
    with fs.open_output_stream(f"{root.rstrip('/')}/{name}") as out:
        out.write(_stored_text(spec).encode())
    return f"{lake.root.rstrip('/')}/{name}"


def read_stored_spec(uri: str, held: ProjectSpec | None = None) -> ProjectSpec:
    """A spec `store_spec` wrote, read with this node's credentials; redacted secrets are left out, or taken from
    `held` where its own are redacted to the same text."""
    fs, path = filesystem_of(uri)
    try:
        with fs.open_input_stream(path) as stream:
            doc = json.loads(stream.read())
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise UserError(f"{uri}: cannot read the stored spec ({str(exc).splitlines()[0]})") from None
    try:
        return ProjectSpec.model_validate(without_redacted(restored(doc, held) if held is not None else doc))
    except ValidationError as exc:
        raise UserError(f"the stored spec does not validate: {format_validation_error(exc, uri, None, {})}") from None


def sections_changed(before: ProjectSpec, after: ProjectSpec) -> list[str]:
    """The spec's top-level sections that differ (compared redacted: a secret's value is never named)."""
    old, new = redacted_document(before), redacted_document(after)
    return [name for name in new if old.get(name) != new[name]]


class LiveSpec:
    """The spec a long-lived actor runs on: the one it was last handed (at its start, or by `offer`), until the
    control plane commits another revision (`ServingState.spec`), which it then reads from its stored copy. An actor
    Ray restarted (`restarted`: it got its creation spec again) moves to the revision the control plane holds at its
    first look; a fresh one keeps the spec its starter handed it. A project's name and lake root never change under
    it: those name its actors and hold its state."""

    def __init__(self, spec: ProjectSpec, restarted: bool = False):
        self.spec, self.digest, self.restarted = spec, spec_digest(spec), restarted
        self.seen: str | None = None  # the control plane's revision last looked at

    def offer(self, spec: ProjectSpec) -> bool:
        """Run on `spec`, handed over as it is (its literal secrets too); False when it is the one in hand."""
        if spec == self.spec:
            return False
        self._check_same_project(spec)
        self.spec, self.digest = spec, spec_digest(spec)
        return True

    def follow(self, revision: dict | None) -> bool:
        """Run on the control plane's revision ({digest, uri}) when it is another than the one in hand. One that
        cannot be read is logged and tried again at the next call: the actor goes on with the spec it has."""
        if not revision:
            return False
        seen, self.seen = self.seen, revision["digest"]
        if revision["digest"] in (self.digest, seen) or (seen is None and not self.restarted):
            return False  # the spec in hand, a revision seen already, or a fresh actor's first look
        try:
            spec = read_stored_spec(revision["uri"], held=self.spec)
            self._check_same_project(spec)
        except UserError as exc:
            log.warning("%s stays on spec %s: %s", self.spec.name, self.digest, exc)
            self.seen = seen  # tried again at the next look
            return False
        log.info("%s moves to spec %s (from %s): %s changed", self.spec.name, revision["digest"], self.digest,
                 ", ".join(sections_changed(self.spec, spec)) or "nothing but secrets")
        self.spec, self.digest = spec, revision["digest"]
        return True

    def _check_same_project(self, spec: ProjectSpec) -> None:
        held, root = self.spec, self.spec.platform.lake_uri
        if (spec.name, spec.platform.lake_uri) != (held.name, root):
            raise UserError(f"a spec of {spec.name} on {spec.platform.lake_uri} cannot replace {held.name} on {root}: "
                            f"another project's actors run it")
