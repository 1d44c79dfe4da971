"""A model package's manifest: the SHA-256 and size of each of its files, trusted through the registry's tag.

The manifest lives in the package; the digest of its bytes is a tag on the registered version (and on the logged
model), so whoever can write the artifact store but not the registry cannot make a changed package load. A package
location pinned to that digest (`…#manifest_sha256=…&model=…`) loads without asking the registry again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from mlray.errors import UserError

MANIFEST, MANIFEST_TAG, FORMAT = "manifest.json", "mlray.manifest_sha256", 1
# written into a package by MLflow's own in-place loads from a local store; never listed, never read
BYPRODUCTS = {"registered_model_meta"}
CACHE_DIR = "__pycache__"


class PackageUnverified(UserError):
    """A package that cannot be checked against a manifest digest from the registry; it is not loaded."""


class PackageTampered(PackageUnverified):
    """A package whose files do not match the manifest the registry vouches for; it is not loaded."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def package_files(root: Path) -> list[str]:
    """The package's file paths relative to `root`, sorted, without the manifest and MLflow's load byproducts."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != CACHE_DIR]
        for name in files:
            relative = (Path(folder) / name).relative_to(root).as_posix()
            if relative != MANIFEST and relative not in BYPRODUCTS:
                found.append(relative)
    return sorted(found)


def write_manifest(root: Path) -> str:
    """Write `root`/manifest.json over the package's files; the SHA-256 of its bytes."""
    entries = {}
    for relative in package_files(root):
        data = (root / relative).read_bytes()
        entries[relative] = {"sha256": sha256(data), "size": len(data)}
    body = json.dumps({"format": FORMAT, "files": entries}, indent=1, sort_keys=True).encode()
    (root / MANIFEST).write_bytes(body)
    return sha256(body)


def verify(root: Path, digest: str, label: str, wanted: set[str]) -> dict[str, bytes]:
    """Check the manifest against `digest` and every file against the manifest before anything is parsed; the bytes
    of the `wanted` files, as hashed."""
    def refuse(problem: str) -> PackageTampered:
        return PackageTampered(f"model {label}: {problem}; refusing to load")

    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise refuse(f"its {MANIFEST} is missing")
    body = manifest_path.read_bytes()
    if sha256(body) != digest:
        raise refuse(f"{MANIFEST} does not match the registry's {MANIFEST_TAG} "
                     f"(sha256 {sha256(body)[:12]}… ≠ {digest[:12]}…)")
    manifest = json.loads(body)
    if manifest.get("format") != FORMAT:
        raise PackageUnverified(f"model {label}: its {MANIFEST} has format {manifest.get('format')!r}, this mlray "
                                f"reads format {FORMAT}: load it with the mlray that logged it")
    listed, kept = manifest["files"], {}
    for relative, entry in sorted(listed.items()):
        path = root / relative
        if not path.is_file():
            raise refuse(f"{relative} is missing")
        data = path.read_bytes()
        if len(data) != entry["size"] or sha256(data) != entry["sha256"]:
            raise refuse(f"{relative} does not match its manifest (sha256 {sha256(data)[:12]}… ≠ "
                         f"{entry['sha256'][:12]}…)")
        if relative in wanted:
            kept[relative] = data
    unlisted = sorted(set(package_files(root)) - set(listed))
    if unlisted:
        raise refuse(f"{unlisted[0]} is not in its manifest")
    absent = sorted(wanted - set(kept))
    if absent:
        raise refuse(f"{absent[0]} is not in its manifest")
    return kept


def pin(location: str, digest: str, label: str) -> str:
    """A package location that carries the manifest digest to check it against, and the version's name."""
    return f"{location}#{urlencode({'manifest_sha256': digest, 'model': label})}"


def unpin(uri: str) -> tuple[str, str, str]:
    """(location, manifest digest, label) of a pinned location; PackageUnverified for a location without a digest."""
    location, _, fragment = uri.rpartition("#") if "#" in uri else (uri, "", "")
    fields = {k: v[0] for k, v in parse_qs(fragment).items()}
    if not fields.get("manifest_sha256"):
        raise PackageUnverified(f"package {location} comes without the digest of its manifest: load it by its "
                                "registry name (models:/NAME/VERSION) or from Registry.artifact_uri")
    return location, fields["manifest_sha256"], fields.get("model", location)


def pinned_uri(client, found) -> str:
    """The package location of a registered version (MLflow's ModelVersion) pinned to its manifest digest: the
    version's tag, else its logged model's (a version registered again from the same logged model)."""
    label = f"{found.name} v{found.version}"
    digest = found.tags.get(MANIFEST_TAG)
    model_id = getattr(found, "model_id", None) or _logged_model_id(found.source or "")
    if not digest and model_id:
        digest = client.get_logged_model(model_id).tags.get(MANIFEST_TAG)
    if not digest:
        raise PackageUnverified(f"model {label} has no {MANIFEST_TAG} tag (registered by an older mlray, or by hand "
                                "from files): retrain it with `mlray train`, or register a package logged by mlray")
    return pin(client.get_model_version_download_uri(found.name, found.version), digest, label)


def _logged_model_id(source: str) -> str | None:
    """The logged model a version's source names ('models:/m-…'), if it names one."""
    path = source.removeprefix("models:/")
    return path if source.startswith("models:/m-") and "/" not in path else None
