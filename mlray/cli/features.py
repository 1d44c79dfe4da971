"""`mlray features fit|show`: fit the declared features on a pinned table version; show a fitted set."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated, Optional

import typer

from mlray import dataplane
from mlray.cli.common import JsonOption, SpecOption, command, console, print_json, spec_and_ray, table
from mlray.features import FittedFeatures
from mlray.spec import load_spec

app = typer.Typer(help="Fit and inspect the declared features.", no_args_is_help=True)


def _describe(feature) -> str:
    if feature.kind == "numeric":
        steps = (["clip"] if feature.clip else []) + (["log1p"] if feature.log1p else [])
        if feature.boundaries is not None:
            return f"{' → '.join(steps + [f'{len(feature.boundaries) + 1} buckets'])}"
        tail = [f"standardize (mean {feature.mean:.4g}, std {feature.std:.4g})"] if feature.standardize else []
        return " → ".join(steps + tail) + (f"; missing → {feature.fill:.4g}" if feature.fill is not None else "")
    if feature.kind == "categorical":
        head = ", ".join(map(str, feature.vocabulary[:5])) + (" …" if len(feature.vocabulary) > 5 else "")
        return f"{len(feature.vocabulary)} values + OOV: {head}"
    if feature.kind == "boolean":
        return "0/1" + (f"; missing → {feature.default}" if feature.default is not None else "")
    return "parts: " + ", ".join(feature.parts)


def render(fitted: FittedFeatures) -> None:
    rows = [[f.name, f.kind, f.source, _describe(f)] for f in fitted.features]
    lineage = fitted.lineage
    console.print(table(f"feature version {fitted.version} — fitted on {lineage.table} v{lineage.table_version} "
                        f"({lineage.rows} rows)", ["feature", "kind", "column", "fitted"], rows))
    console.print(f"model inputs: {len(fitted.numeric_names)} numeric, {len(fitted.categorical_names)} categorical "
                  f"(cardinalities {fitted.cardinalities})")


@app.command("fit")
@command
def fit_cmd(
    version: Annotated[Optional[int], typer.Option(help="Version of the train table (default: the latest).")] = None,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Fit even if the table fails validation.")] = False,
    spec_path: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit the spec's features with Ray Data on a pinned version of the train table."""
    spec = spec_and_ray(spec_path)
    with console.status("validating and fitting features…") if not as_json else nullcontext():
        fitted = dataplane.fit_features(spec, version, require_valid=not no_validate)
    if as_json:
        print_json({"feature_version": fitted.version, **fitted.model_dump(mode="json")})
    else:
        render(fitted)


@app.command("show")
@command
def show_cmd(
    feature_version: Annotated[Optional[str], typer.Argument(help="Feature version (default: the latest fitted).")] = None,
    spec_path: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a fitted feature set: statistics, vocabularies, model inputs."""
    fitted = dataplane.feature_store(load_spec(spec_path)).load(feature_version)
    if as_json:
        print_json({"feature_version": fitted.version, **fitted.model_dump(mode="json")})
    else:
        render(fitted)
