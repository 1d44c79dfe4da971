"""`mlray deploy`, `mlray serve status`, `mlray keys hash`: the HTTP service on Ray Serve."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated, Optional

import typer

from mlray.cli.common import JsonOption, SpecOption, command, console, print_json, spec_and_ray, table

app = typer.Typer(help="The model service on Ray Serve.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys for the service.", no_args_is_help=True)


@command
def deploy(
    versions: Annotated[Optional[list[str]], typer.Argument(help="More versions or aliases to serve (at weight 0).")] = None,
    inject_delay_ms: Annotated[Optional[float], typer.Option(
        help="Game day: (re)start VERSIONS with this much delay added to every model call.")] = None,
    inject_error_rate: Annotated[Optional[float], typer.Option(
        help="Game day: (re)start VERSIONS failing this share of model calls; 0 with no delay removes faults.")] = None,
    spec_path: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """Serve the champion (and VERSIONS) behind the ingress; re-running never restarts what already serves."""
    from mlray.errors import UserError
    from mlray.serve.auth import KeyRing
    from mlray.serve.deploy import deploy as deploy_service
    from mlray.serve.model_server import Fault

    fault = None
    if inject_delay_ms is not None or inject_error_rate is not None:
        if not versions:
            raise UserError("--inject-delay-ms/--inject-error-rate apply to the VERSIONS named: name at least one")
        fault = Fault(inject_delay_ms or 0.0, inject_error_rate or 0.0)
    spec = spec_and_ray(spec_path)
    keys = KeyRing.for_serving(spec.serve)  # this shell's keys: the spec's hashes and MLRAY_API_KEYS
    with console.status("deploying on Ray Serve…") if not as_json else nullcontext():
        done = deploy_service(spec, versions, fault=fault, keys=keys)
    if spec.monitor.enabled:
        from mlray.monitor import actor

        actor.start(spec)
    if as_json:
        print_json({"url": done.url, "plan": done.plan.to_dict(), "started": done.started,
                    "monitor": spec.monitor.enabled})
        return
    console.print(f"serving {spec.name} at {done.url}/v1/predict (docs: {done.url}/docs)")
    _print_plan(done.plan.to_dict())
    if spec.monitor.enabled:
        console.print("the drift monitor watches this traffic (`mlray monitor status`)")
    if not spec.platform.ray_address and not as_json:
        serve_until_interrupted()


def serve_until_interrupted() -> None:
    """An embedded Ray ends with this process: keep it (and the service) up until Ctrl-C."""
    import time

    console.print("embedded Ray: the service runs while this command does (Ctrl-C stops it)")
    try:
        while True:  # short naps: Ctrl-C may land on one of Ray's threads, and only wakes this one when it looks
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopped")


@app.command()
@command
def status(spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """What Serve runs for this project: applications, their state, the plan, and which revision each ingress
    replica has applied."""
    from ray import serve

    from mlray.serve import control

    spec = spec_and_ray(spec_path)
    apps = {name: app for name, app in serve.status().applications.items()
            if name == spec.name or name.startswith(f"{spec.name}-model-")}
    states = {name: [getattr(app.status, "value", str(app.status)), app.message] for name, app in sorted(apps.items())}
    state = control.client(spec).snapshot()
    replicas = control.client(spec).replica_revisions()
    if as_json:
        print_json({"applications": {n: {"status": s, "message": m} for n, (s, m) in states.items()},
                    "plan": state["plan"], "revision": state["revision"], "replicas": replicas})
        return
    console.print(table(f"Serve applications of {spec.name}", ["application", "status", "message"],
                        [[n, s, m] for n, (s, m) in states.items()]))
    if state["plan"]:
        _print_plan(state["plan"])
    console.print(table(f"ingress replicas (control plane at revision {state['revision']})", ["replica", "revision"],
                        [[name, revision] for name, revision in sorted(replicas.items())]))


@keys_app.command("hash")
@command
def hash_key(key: Annotated[str, typer.Argument(help="The API key to hash (for serve.api_keys).")]) -> None:
    """Print the 'sha256:…' form of a key, to put in serve.api_keys (the spec never holds plain keys)."""
    from mlray.serve.auth import hash_key as hashed

    console.print(hashed(key), highlight=False)


def _print_plan(plan: dict) -> None:
    rows = [[v, f"{w:.0%}", "champion" if v == plan["champion"] else ""] for v, w in plan["weights"].items()]
    if plan.get("shadow"):
        rows.append([plan["shadow"], f"shadow {plan['shadow_fraction']:.0%}", ""])
    console.print(table(f"traffic (step: {plan.get('step', 'stable')})", ["version", "weight", "role"], rows))

