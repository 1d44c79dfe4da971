"""`mlray monitor …`, `mlray drift report`, `mlray incidents …`: the drift monitor, its reports and its incidents."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mlray.cli.common import JsonOption, SpecOption, command, console, print_json, spec_and_ray, table
from mlray.control.state import IncidentStatus, WindowReport

monitor_app = typer.Typer(help="The drift monitor (a Ray actor per project).", no_args_is_help=True)
drift_app = typer.Typer(help="Drift reports of the monitored windows.", no_args_is_help=True)
incidents_app = typer.Typer(help="Incidents: why retraining started and how it ended.", no_args_is_help=True)


@monitor_app.command("start")
@command
def start(spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Start the monitor (or find it running): it watches served traffic from now on, or from its checkpoint."""
    from mlray import monitoring
    from mlray.monitor import actor

    spec = spec_and_ray(spec_path)
    monitoring.start(spec)
    _show(actor.status(spec), as_json)


@monitor_app.command("status")
@command
def status(spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Windows checked, the champion compared with, live quality, the last windows and open incidents."""
    from mlray.monitor import actor

    _show(actor.status(spec_and_ray(spec_path)), as_json)


@monitor_app.command("stop")
@command
def stop(spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Stop the monitor; its checkpoint stays, so `mlray monitor start` resumes where it stopped."""
    from mlray.monitor import actor

    stopped = actor.stop(spec_and_ray(spec_path))
    if as_json:
        print_json({"stopped": stopped})
    else:
        console.print("monitor stopped" if stopped else "no monitor was running")


def _show(state: dict | None, as_json: bool) -> None:
    if as_json:
        print_json(state)
        return
    if state is None:
        console.print("no monitor is running (start one with `mlray monitor start`)")
        return
    console.print(f"monitor of {state['project']} (spec {state['spec']}): {state['windows']} windows checked against champion "
                  f"v{state['champion']}; labelled rows {state['labelled']}; open incidents: "
                  f"{', '.join(state['open_incidents']) or 'none'}")
    if state["live_quality"]:
        console.print(table("live quality", ["version", "metrics"], [
            [v, ", ".join(f"{k} {x:.3f}" for k, x in m.items())] for v, m in state["live_quality"].items()]))
    console.print(table("last windows", ["window", "rows", "drifted columns", "score drift", "quality drop",
                                         "estimated drop", "class shares moved", "labels outside estimate",
                                         "segments flagged", "other versions' scores"], [
        [w["seq"], w["rows"], ", ".join(w["drifted"]), w["score_drift"],
         "" if w["quality_drop"] is None else f"{w['quality_drop']:.3f}",
         "" if w.get("estimated_drop") is None else f"{w['estimated_drop']:.3f}", ", ".join(w.get("prior_shift", [])),
         "yes" if w.get("concept_drift") else "", ", ".join(f"{c}={v}" for c, v in w.get("segments", [])),
         ", ".join(f"v{v} {'drift' if moved else 'ok'}" for v, moved in w.get("versions", {}).items())]
        for w in state["history"]]))


@drift_app.command("report")
@command
def report(window: Annotated[Optional[int], typer.Option(help="The window to picture (default: the latest).")] = None,
           limit: Annotated[int, typer.Option(help="Windows in the table, newest first.")] = 20,
           out: Annotated[Optional[Path], typer.Option(help="Folder for the PNGs (default <state>/reports/drift).")]
           = None, spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """The windows' drift checks as a table, and PNGs: reference against current distributions of one window's
    drifted columns, every column's p-value over the windows, and the policy's metric (and precision) estimated
    before labels against realised, per window."""
    from mlray import dataplane
    from mlray.errors import UserError
    from mlray.monitor.reference import load_reference
    from mlray.window_reports import read_reports

    spec = spec_and_ray(spec_path)
    lake = dataplane.lake_of(spec)
    reports = read_reports(lake)
    if not reports:
        raise UserError("no drift reports yet: start the monitor (`mlray monitor start`) and send traffic")
    epoch = reports[0].epoch
    reports = [r for r in reports if r.epoch == epoch]
    chosen = reports[0] if window is None else next((r for r in reports if r.seq == window), None)
    if chosen is None:
        raise UserError(f"no window {window} (windows 0 to {reports[0].seq} were checked)")
    reference = load_reference(spec, chosen.champion)
    metrics = _compared_metrics(spec, reference.task)
    pictures = _pictures(spec, lake, reports, chosen, reference, metrics, out or spec.platform.reports_dir / "drift")
    if as_json:
        print_json({"windows": [r.model_dump(mode="json") for r in reports[:limit]], "metrics": list(metrics),
                    "pictures": [str(p) for p in pictures]})
        return
    console.print(table(f"drift reports of {spec.name} (newest first)",
                        ["window", "checked", "rows", "champion", "drifted columns", "min p", "score p",
                         "estimated before labels (90%)", "realised (champion, ±2 se)", "class shares",
                         "labels against estimate", "worst segments", "other versions (own reference)", "verdict"],
                        [[r.seq, f"{r.at:%Y-%m-%d %H:%M:%S}", r.rows, r.champion, ", ".join(r.drifted),
                          f"{min(r.p_values):.2g}" if r.p_values else "",
                          "" if r.score_p_value is None else f"{r.score_p_value:.2g}", _estimated(r.estimated, metrics),
                          _realised(r.quality.get(r.champion, {}), metrics),
                          _estimated(r.priors, None) + (f" (moved: {', '.join(r.prior_shift)})" if r.prior_shift else ""),
                          _assumptions(r.assumptions), _segments(r.segments), _versions(r.versions, metrics),
                          r.verdict] for r in reports[:limit]]))
    for path in pictures:
        console.print(f"wrote {path}")


def _compared_metrics(spec, task: str) -> tuple[str, ...]:
    """The retraining policy's metric (default: the task's), then a binary model's precision: the ones estimated
    against realised."""
    from mlray.monitor.live import DEFAULT_METRIC

    metric = spec.monitor.retrain.quality_metric or DEFAULT_METRIC[task]
    return tuple(dict.fromkeys((metric, "precision"))) if task == "binary" else (metric,)


def _estimated(estimates: dict[str, dict[str, float]], shown: tuple[str, ...] | None = ("roc_auc", "precision")) -> str:
    """'roc_auc 0.91 [0.89, 0.93]' for the estimates worth a glance (`shown`; None: all)."""
    return ", ".join(f"{name} {e['value']:.3g} [{e['low']:.3g}, {e['high']:.3g}]"
                     for name, e in estimates.items() if shown is None or name in shown)


def _assumptions(check: dict) -> str:
    """'outside: recall, f1' / 'within (1,800 rows)' / why the labels were not judged."""
    if not check:
        return ""
    if not check.get("judged"):
        return f"not judged: {check.get('reason', '')}"
    return f"outside: {', '.join(check['outside'])}" if check.get("outside") else f"within ({check['rows']:,} rows)"


def _segments(found: dict) -> str:
    """'device=mobile q 0.001 (score, amount)' for the worst segments (flagged ones marked by their tests)."""
    return "; ".join(f"{w['column']}={w['value']} q {w['evidence']:.2g}" + (f" ({', '.join(w['drifted'])})"
                                                                          if w.get("drifted") else "")
                     for w in found.get("worst", [])[:3])


def _versions(versions: dict[str, dict], shown: tuple[str, ...]) -> str:
    """'v2 (shadow) score p 0.41, roc_auc 0.9 [0.88, 0.92]' per other version served in the window."""
    def one(version: str, found: dict) -> str:
        head = f"v{version}" + (" (shadow)" if found.get("shadow") else "")
        if "error" in found:
            return f"{head} not checked: {found['error']}"
        score = "" if found.get("score_p_value") is None else f" score p {found['score_p_value']:.2g}"
        return f"{head}{score}" + (f", {_estimated(found['estimated'], shown)}" if found.get("estimated") else "")
    return "; ".join(one(v, found) for v, found in versions.items())


def _realised(live: dict[str, float], shown: tuple[str, ...]) -> str:
    """'roc_auc 0.88 ± 0.04' for the champion's live metrics among `shown` (± twice the standard error, if known)."""
    return ", ".join(f"{name} {live[name]:.3g}" + (f" ± {2 * live[f'{name}_se']:.2g}" if f"{name}_se" in live else "")
                     for name in shown if name in live)


def _pictures(spec, lake, reports: list[WindowReport], chosen: WindowReport, reference, metrics: tuple[str, ...],
              folder: Path) -> list[Path]:
    from mlray.lake.inference import flat_inputs
    from mlray.monitor.plots import distributions_png, p_values_png, quality_png
    from mlray.monitor.windows import Cursor, read_from

    folder.mkdir(parents=True, exist_ok=True)
    rows = read_from(lake, spec.serve.inference_log_table, Cursor(*chosen.start))
    window = flat_inputs(rows.slice(0, chosen.rows))
    positive = str(reference.classes[-1]) if reference.task == "binary" and reference.classes else None
    return [distributions_png(reference, window, chosen, folder / f"window-{chosen.seq}.png"),
            p_values_png(reports, folder / "p-values.png"),
            *(quality_png(reports, metric, folder / f"quality-{metric}.png", positive) for metric in metrics)]


def _incidents(spec_path):
    """The spec and its project's incidents table."""
    from mlray import dataplane
    from mlray.incidents import Incidents
    from mlray.spec import load_spec

    spec = load_spec(spec_path)
    return spec, Incidents(dataplane.lake_of(spec))


@incidents_app.command("list")
@command
def list_incidents(spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Every incident, newest first: cause, status, job and challenger."""
    found = _incidents(spec_path)[1].all()
    if as_json:
        print_json([i.model_dump(mode="json") for i in found])
        return
    console.print(table("incidents (newest first)", ["incident", "opened", "cause", "status", "job", "challenger",
                                                     "detail"],
                        [[i.incident_id, f"{i.opened:%Y-%m-%d %H:%M:%S}", i.cause, i.status, i.job_id, i.challenger,
                          i.detail] for i in found]))


@incidents_app.command("show")
@command
def show(incident_id: Annotated[str, typer.Argument(help="The incident's id.")], spec_path: SpecOption = None,
         as_json: JsonOption = False) -> None:
    """One incident: its cause, evidence, and every event."""
    incident = _incidents(spec_path)[1].get(incident_id)
    if as_json:
        print_json(incident.model_dump(mode="json"))
        return
    console.print(f"incident {incident.incident_id} ({incident.cause}): {incident.status}")
    console.print(f"evidence: {incident.evidence}")
    console.print(table("events", ["at", "status", "actor", "detail"],
                        [[f"{e.at:%Y-%m-%d %H:%M:%S}", e.status, e.actor, e.detail] for e in incident.events]))


@incidents_app.command("approve")
@command
def approve(incident_id: Annotated[str, typer.Argument(help="The incident waiting for approval.")],
            spec_path: SpecOption = None, as_json: JsonOption = False) -> None:
    """Approve an incident's retraining (monitor.retrain.mode: approval); the monitor submits its job."""
    from mlray.audit import AuditLog, default_actor
    from mlray.errors import UserError

    spec, incidents = _incidents(spec_path)
    incident = incidents.get(incident_id)
    if incident.status != IncidentStatus.AWAITING_APPROVAL:
        raise UserError(f"incident {incident_id} is {incident.status}, not awaiting approval")
    actor = default_actor()
    incidents.record(incident_id, IncidentStatus.APPROVED, actor, detail=f"approved by {actor}")
    AuditLog(spec.platform).append("incident.approve", spec.name, f"incident {incident_id}", component="cli")
    if as_json:
        print_json(incidents.get(incident_id).model_dump(mode="json"))
    else:
        console.print(f"incident {incident_id} approved: the monitor submits its retraining job at its next step")
