"""`mlray canary …`, `mlray rollback`: progressive rollout and its manual controls."""

from __future__ import annotations

from typing import Annotated

import typer

from mlray.cli.common import JsonOption, SpecOption, command, console, print_json, spec_and_ray, table

app = typer.Typer(help="Progressive rollout of a challenger (the controller runs as a Ray actor).", no_args_is_help=True)


def _run(spec_path, method: str, *args, as_json: bool = False):
    """Call the controller's `method` with `args` (and, for a change, this process's principal as who asked); print
    the state."""
    from mlray.audit import current_principal
    from mlray.rollout import controller

    rollout = controller.client(spec_and_ray(spec_path))
    changes = {"start": rollout.start, "promote": rollout.promote, "rollback": rollout.rollback,
               "pause": rollout.pause, "resume": rollout.resume}
    state = changes[method](*args, actor=current_principal()) if method in changes else rollout.status()
    if as_json:
        print_json(state)
    elif state is None:
        console.print("no rollout has been started")
    else:
        _print_state(state)


@app.command()
@command
def start(version: Annotated[str, typer.Argument(help="Challenger version or alias.")] = "challenger",
          spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Start rolling VERSION out through rollout.steps (it is deployed first if it is not served)."""
    _run(spec_path, "start", version, as_json=as_json)


@app.command()
@command
def status(spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """The rollout: step, failures, and each analysis with its checks."""
    _run(spec_path, "status", as_json=as_json)


@app.command()
@command
def pause(spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Hold the rollout at its current step (traffic stays as it is)."""
    _run(spec_path, "pause", as_json=as_json)


@app.command()
@command
def resume(spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Go on from the current step (its interval starts again)."""
    _run(spec_path, "resume", as_json=as_json)


@app.command()
@command
def promote(reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "manual promotion",
            spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Promote the challenger now: it becomes champion, the old champion previous."""
    _run(spec_path, "promote", reason, as_json=as_json)


@app.command()
@command
def rollback(reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "manual rollback",
             spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Stop the rollout: all traffic back to the champion, the challenger tagged with the reason."""
    _run(spec_path, "rollback", reason, as_json=as_json)


@command
def rollback_champion(spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Make the previous champion the champion again (served, all traffic), in one command."""
    from mlray.audit import current_principal
    from mlray.serve.deploy import rollback_to_previous

    spec = spec_and_ray(spec_path)
    plan = rollback_to_previous(spec, current_principal())
    if as_json:
        print_json(plan.to_dict())
    else:
        console.print(f"champion is version {plan.champion} again; all traffic goes to it")


def _print_state(state: dict) -> None:
    steps = state["steps"]
    step = steps[state["step"]] if state["step"] < len(steps) else "-"
    console.print(f"v{state['challenger']} against champion v{state['champion']}: {state['status']}, "
                  f"step {state['step'] + 1}/{len(steps)} ({step}), failures {state['failures']}"
                  + (f" — {state['reason']}" if state["reason"] else "")
                  + (f" (answers incident {state['incident']})" if state.get("incident") else ""))
    if state["history"]:
        last = state["history"][-1]
        console.print(table(f"last analysis ({last['verdict']}, {last['challenger_requests']} challenger rows)",
                            ["check", "status", "value", "threshold", "detail"],
                            [[c["name"], c["status"], "" if c["value"] is None else f"{c['value']:.4g}",
                              f"{c['threshold']:g}", c["detail"]] for c in last["checks"]]))
        for note in last.get("evidence") or []:  # a check past its threshold that other evidence outranked
            console.print(f"noted: {note}")
