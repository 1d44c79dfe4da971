"""Specs kept under the lake root, so a job on any node reads the spec it was started with, and its submission
carries only where that is, never the spec itself (a runtime env is shown by the Jobs API and the dashboard).

What is stored is the redacted document (`mlray.spec.secrets`), named by its content's digest: storing it twice
writes the same file. A job reads it with its node's own credentials.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from mlray.errors import UserError
from mlray.lake.io import filesystem_of
from mlray.lake.tables import Lake
from mlray.spec import ProjectSpec
from mlray.spec.secrets import redacted_document, without_redacted

SPECS_FOLDER = "_mlray/specs"


def store_spec(lake: Lake, spec: ProjectSpec) -> str:
    """Write the spec's redacted document under the lake root; its URI."""
    text = json.dumps(redacted_document(spec), indent=1)  # in the spec's order: a table's columns keep theirs
    name = f"{SPECS_FOLDER}/{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"
    fs, root = lake.filesystem()
    fs.create_dir(f"{root.rstrip('/')}/{SPECS_FOLDER}", recursive=True)
    with fs.open_output_stream(f"{root.rstrip('/')}/{name}") as out:
        out.write(text.encode())
    return f"{lake.root.rstrip('/')}/{name}"


def read_stored_spec(uri: str) -> ProjectSpec:
    """A spec `store_spec` wrote, read with this node's credentials; redacted secrets are left out."""
    fs, path = filesystem_of(uri)
    try:
        with fs.open_input_stream(path) as stream:
            doc = json.loads(stream.read())
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise UserError(f"{uri}: cannot read the stored spec ({str(exc).splitlines()[0]})") from None
    try:
        return ProjectSpec.model_validate(without_redacted(doc))
    except ValueError as exc:
        raise UserError(f"{uri}: the stored spec does not validate: {str(exc).splitlines()[0]}") from None
