"""`mlray deploy`, `mlray serve status`, `mlray keys hash|add|revoke|list`: the HTTP service on Ray Serve."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
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
    restart: Annotated[bool, typer.Option(
        help="Start the ingress again, for a serve setting it cannot take while it runs (port, replicas, ...).")] = False,
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
        done = deploy_service(spec, versions, fault=fault, keys=keys, restart=restart)
    if spec.monitor.enabled:
        from mlray.monitor import actor

        actor.start(spec)
    if as_json:
        print_json({"url": done.url, "plan": done.plan.to_dict(), "started": done.started,
                    "settings": done.settings, "monitor": spec.monitor.enabled})
        return
    console.print(f"serving {spec.name} at {done.url}/v1/predict (settings: {done.settings})")
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


KeyFile = Annotated[Optional[Path], typer.Option("--file", help="Read the key from this file (default: stdin).")]


def read_key(file: Path | None) -> str:
    """An API key from `file`, else stdin (asked for without echo at a terminal): never from the command line, where
    the process list and the shell's history would show it."""
    from mlray.serve.auth import checked_key

    if file is not None:
        return checked_key(file.read_text(), str(file))
    text = typer.prompt("API key", hide_input=True) if sys.stdin.isatty() else sys.stdin.read()
    return checked_key(text, "the key on stdin")


@keys_app.command("hash")
@command
def hash_key(file: KeyFile = None) -> None:
    """Print the 'sha256:…' form of a key read from stdin (or --file), to put in serve.api_keys."""
    from mlray.serve.auth import hash_key as hashed

    console.print(hashed(read_key(file)), highlight=False)


@keys_app.command("add")
@command
def add_key(file: KeyFile = None, spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Accept one more API key, read from stdin (or --file): hashed here, only its hash reaches the control plane,
    and the running service takes it at once (audited by fingerprint)."""
    from mlray.serve.auth import fingerprint
    from mlray.serve.auth import hash_key as hashed
    from mlray.serve.deploy import change_keys

    key_hash = hashed(read_key(file))
    state = change_keys(spec_and_ray(spec_path), [key_hash], [], "cli")
    _print_keys(state, as_json, f"added {fingerprint(key_hash)}")


@keys_app.command("revoke")
@command
def revoke_key(
    key_fingerprint: Annotated[Optional[str], typer.Option("--fingerprint", help="The key's fingerprint, as `mlray keys "
                                                           "list` shows it (else the key is read like `add` reads it).")] = None,
    file: KeyFile = None, spec_path: SpecOption = None, as_json: JsonOption = False,
) -> None:
    """Stop accepting one API key, named by its fingerprint or given on stdin (or --file); at once, and audited."""
    from mlray.serve.auth import hash_key as hashed
    from mlray.serve.deploy import change_keys

    name = key_fingerprint or hashed(read_key(file))
    state = change_keys(spec_and_ray(spec_path), [], [name], "cli")
    _print_keys(state, as_json, "revoked")


@keys_app.command("list")
@command
def list_keys(spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """The fingerprints of the keys the service accepts (never a key or its whole hash)."""
    from mlray.serve import control

    _print_keys(control.client(spec_and_ray(spec_path)).snapshot(), as_json, None)


def _print_keys(state: dict, as_json: bool, done: str | None) -> None:
    from mlray.serve.auth import fingerprint

    shown = sorted(fingerprint(h) for h in state["keys"] or [])
    if as_json:
        print_json({"keys": shown, "revision": state["revision"]})
        return
    if done:
        console.print(f"{done}; the service accepts {len(shown)} key(s) (revision {state['revision']})")
    console.print(table("accepted API keys", ["fingerprint"], [[f] for f in shown]))


def _print_plan(plan: dict) -> None:
    rows = [[v, f"{w:.0%}", "champion" if v == plan["champion"] else ""] for v, w in plan["weights"].items()]
    if plan.get("shadow"):
        rows.append([plan["shadow"], f"shadow {plan['shadow_fraction']:.0%}", ""])
    console.print(table(f"traffic (step: {plan.get('step', 'stable')})", ["version", "weight", "role"], rows))

