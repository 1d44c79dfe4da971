"""Loading the spec: YAML, environment overrides on top, and one-line errors that name the file, line and key."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlray.errors import UserError
from mlray.spec.base import DEFAULT_SPEC_FILE, ENV_PREFIX, _describe
from mlray.spec.features import FEATURE_COLUMN_TYPES
from mlray.spec.project import ProjectSpec


def env_overrides(environ: dict[str, str] | None = None) -> dict[tuple[str, ...], tuple[str, Any]]:
    """MLRAY_PLATFORM__RAY_ADDRESS=auto → {('platform', 'ray_address'): ('MLRAY_...', 'auto')}."""
    environ = os.environ if environ is None else environ
    found = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        path = tuple(part.lower() for part in key[len(ENV_PREFIX):].split("__"))
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        found[path] = (key, value)
    return found


def _apply_override(doc: dict, path: tuple[str, ...], value: Any, origin: str) -> None:
    node = doc
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"{origin}: cannot set a key inside '{part}', which is not a mapping")
        node = child
    node[path[-1]] = value


def _line_of(root: yaml.Node | None, loc: tuple) -> int | None:
    """The line in the YAML file where the value at `loc` (or its nearest parent) stands."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(part)), None)
            key = next((k for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            line, node = key.start_mark.line + 1, match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            continue  # pydantic adds union tags such as 'numeric' to the location
    return line



def format_validation_error(exc: ValidationError, source: str, root: yaml.Node | None, overridden: dict) -> str:
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc if not (isinstance(p, str) and p in FEATURE_COLUMN_TYPES)) or "(top level)"
    origin = next((env for path, (env, _) in overridden.items() if loc[: len(path)] == path), None)
    where = origin or (f"{source}:{line}" if (line := _line_of(root, loc)) else source)
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {key}: {_describe(error)}{more}"


def parse_spec(text: str, source: str = "<spec>", base_dir: Path | None = None, environ=None) -> ProjectSpec:
    """Parse and validate spec text; environment overrides apply on top."""
    try:
        root = yaml.compose(text)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise UserError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise UserError(f"{source}: expected a mapping of sections (platform, data, features, ...)")
    overridden = env_overrides(environ)
    for path, (origin, value) in overridden.items():
        _apply_override(doc, path, value, origin)
    try:
        spec = ProjectSpec.model_validate(doc)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source, root, overridden)) from None
    base = base_dir or Path.cwd()
    spec = spec.model_copy(update={"platform": spec.platform.resolved(base)})
    return spec


def starter_spec(name: str | None = None) -> str:
    """The starter spec `mlray init` writes: a card-fraud example with every key explained."""
    text = resources.files("mlray").joinpath("templates/starter.yaml").read_text()
    return text.replace("name: card-fraud", f"name: {name}", 1) if name else text


def load_spec(path: str | Path | None = None) -> ProjectSpec:
    """Load the spec from `path`, $MLRAY_SPEC or ./mlray.yaml."""
    path = Path(path or os.environ.get("MLRAY_SPEC") or DEFAULT_SPEC_FILE)
    if not path.is_file():
        raise UserError(f"{path}: spec file not found (create one with `mlray init`)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the spec file: {exc}") from None
    spec = parse_spec(text, str(path), base_dir=path.resolve().parent)
    spec._path = path.resolve()
    return spec
