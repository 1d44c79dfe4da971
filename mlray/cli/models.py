"""`mlray models list|show|alias`: the project's registered model versions."""

from __future__ import annotations

from typing import Annotated

import typer

from mlray.cli.common import JsonOption, SpecOption, command, console, print_json, table
from mlray.errors import UserError
from mlray.spec import load_spec

app = typer.Typer(help="Registered model versions and their aliases.", no_args_is_help=True)


def _registry(spec_path):
    from mlray.registry.models import Registry

    return Registry(load_spec(spec_path))


@app.command("list")
@command
def list_cmd(spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Every version: aliases, gate rejections, lineage and test metrics."""
    versions = _registry(spec_path).versions()
    if as_json:
        print_json(versions)
        return
    rows = [[v["version"], ", ".join(v["aliases"]), "rejected" if v["rejected"] else "", v["table_version"],
             v["feature_version"], ", ".join(f"{k[5:]}={m:.3f}" for k, m in sorted(v["metrics"].items())[:3])]
            for v in versions]
    console.print(table("model versions", ["version", "aliases", "gate", "table version", "feature version",
                                           "test metrics"], rows))


@app.command("show")
@command
def show_cmd(version: Annotated[str, typer.Argument(help="Version number or alias.")],
             spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """One version in full."""
    registry = _registry(spec_path)
    wanted = registry.version_of(version) if not version.isdigit() else version
    found = next((v for v in registry.versions() if v["version"] == wanted), None)
    if found is None:
        raise UserError(f"model {registry.model_name!r} has no version or alias {version!r}")
    if as_json:
        print_json(found)
        return
    console.print(table(f"{registry.model_name} version {found['version']}", ["field", "value"],
                        [[k, v] for k, v in found.items()]))


@app.command("alias")
@command
def alias_cmd(alias: Annotated[str, typer.Argument(help="champion, challenger or previous.")],
              version: Annotated[str, typer.Argument(help="Version number.")],
              spec_path: SpecOption = None) -> None:
    """Point an alias at a version through the control plane (champion moves the old champion to previous and stops a
    running rollout; `mlray deploy` then sends it all traffic). Audited."""
    from mlray.audit import default_actor
    from mlray.cli.common import spec_and_ray
    from mlray.serve import control

    spec = spec_and_ray(spec_path)
    control.client(spec).set_alias(alias, version, default_actor())  # refuses an unknown alias or version
    console.print(f"{spec.name}@{alias} → version {version}")
