"""`mlray audit`: the audit log, newest first; `mlray audit verify`: walk its hash chain and its table's history."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mlray.cli.common import JsonOption, SpecOption, command, console, print_json, table

app = typer.Typer(help="The audit log: deploys, weight changes, promotions, rollbacks; who, when, why, before and after.",
                  invoke_without_command=True)


@app.callback()
@command
def audit(ctx: typer.Context,
          limit: Annotated[int, typer.Option(help="How many entries, newest first.")] = 20,
          action: Annotated[Optional[str], typer.Option(help="Only this action (deploy, canary.promote, …).")] = None,
          spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """The audit log, newest first: who (principal), through what (component), when, why, before and after."""
    from mlray.audit import AuditLog
    from mlray.spec import load_spec

    if ctx.invoked_subcommand is not None:
        return
    entries = AuditLog(load_spec(spec_path).platform).read(limit, action)
    if as_json:
        print_json(entries)
        return
    console.print(table("audit log (newest first)", ["#", "at", "principal", "component", "action", "target", "reason",
                                                     "after"],
                        [[e["seq"], e["at"], e["principal"], e["component"], e["action"], e["target"], e["reason"],
                          _weights(e["after"])] for e in entries]))


@app.command()
@command
def verify(spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Walk the hash chain and the table's history: exit 1 naming the first entry tampered with, else 0."""
    from mlray.audit import AuditLog
    from mlray.audit_verify import verify as walk
    from mlray.spec import load_spec

    verdict = walk(AuditLog(load_spec(spec_path).platform))
    if as_json:
        print_json({"intact": verdict.intact, "entries": verdict.entries, "unchained": verdict.unchained,
                    "head": verdict.head, "findings": [vars(f) for f in verdict.findings]})
    else:
        console.print(verdict.summary(), highlight=False, soft_wrap=True)
    if not verdict.intact:
        raise typer.Exit(1)


def _weights(plan) -> str:
    if not isinstance(plan, dict) or "weights" not in plan:
        return ""
    shares = ", ".join(f"v{v} {w:.0%}" for v, w in plan["weights"].items())
    return shares + (f", shadow v{plan['shadow']}" if plan.get("shadow") else "")
