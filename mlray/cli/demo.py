"""`mlray demo`: the whole loop on an embedded local Ray, with no server to set up.

generate → ingest (twice) → validate → features → train (Ray Train) → Tune sweep → serve → labelled traffic →
the data drifts → the monitor opens an incident → a retraining job through the Jobs API → canary → promotion."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from mlray import dataplane
from mlray.cli.common import command, console, count_progress, table
from mlray.cli.features import render as render_features
from mlray.cli.serve import serve_until_interrupted
from mlray.control.state import Incident, IncidentStatus
from mlray.demo.project import (
    CALM_TIMEOUT_S,
    DRIFT,
    LOOP_TIMEOUT_S,
    Sizes,
    fresh_folder,
    land_drifted_files,
    landing_files,
    stop_service,
    write_project,
)
from mlray.demo.traffic import LabelledTraffic
from mlray.spec import ProjectSpec


class LoopDidNotClose(RuntimeError):
    """The monitor or the retraining did not reach an outcome in time (the demo exits 1 and says where to look)."""


def _step(number: int, text: str) -> None:
    console.rule(f"[bold]{number}. {text}", align="left")


def _data_plane(spec: ProjectSpec, folder: Path, rows: int) -> None:
    _step(2, "landing files from the synthetic card-transaction source, ingested exactly once")
    files = landing_files(folder / "landing", rows)
    report = dataplane.ingest_source(spec, folder / "landing")
    console.print(table("", ["file", "status", "read", "landed", "quarantined"],
                        [[Path(f.path).name, f.status, f.rows_read, f.rows_landed, f.rows_quarantined]
                         for f in report.files]))
    reasons = dataplane.lake_of(spec).read(report.quarantine_table).slice(0, 2).column("_reason").to_pylist()
    console.print("quarantine reasons, for example:\n" + "\n".join(f"  • {r}" for r in reasons))
    again = dataplane.ingest_source(spec, folder / "landing")
    console.print(f"the same folder again: {sum(f.status == 'skipped' for f in again.files)} of {len(files)} files "
                  f"skipped, {again.rows_landed} rows landed")

    _step(3, "validate the snapshot and fit the features with Ray Data")
    result, path = dataplane.validate_table(spec)
    console.print(("[green]" if result.passed else "[red]") + result.summary() + f"[/] (report: {path})")
    render_features(dataplane.fit_features(spec))


def _models(spec: ProjectSpec) -> None:
    from mlray import training

    _step(4, "train on Ray Train, tracked in MLflow, registered through the gate")
    with count_progress("epochs") as progress:
        first = training.train(spec, progress=progress)
    where = "in this process, Ray Train's local mode" if first.execution == "local" else "on Ray Train workers"
    console.print(f"version {first.model_version}: {first.decision}; test ROC AUC "
                  f"{first.metrics.get('roc_auc', float('nan')):.3f} (table v{first.table_version}; trained {where})")

    _step(5, f"a Ray Tune sweep of {spec.tune.trials} trials, each a Ray Train run")
    with count_progress("trials") as progress:
        sweep = training.tune(spec, progress=progress)
    console.print(f"best trial {sweep.best_trial} → version {sweep.model.model_version}: {sweep.model.decision}"
                  + (f" ({'; '.join(sweep.model.reasons)})" if sweep.model.reasons else ""))


def _serve(spec: ProjectSpec) -> str:
    from mlray.monitor import actor
    from mlray.serve.auth import KeyRing
    from mlray.serve.deploy import deploy

    _step(6, "serve the champion on Ray Serve and start the drift monitor")
    with console.status("deploying…"):
        done = deploy(spec, keys=KeyRing.for_serving(spec.serve))
        actor.start(spec)
    console.print(f"serving version {done.plan.champion} at {done.url}/v1/predict; the monitor checks every "
                  f"{spec.monitor.window_rows} served rows against the training data")
    return done.url


def _calm_traffic(spec: ProjectSpec, url: str, key: str) -> None:
    from mlray.window_reports import read_reports

    _step(7, "live traffic with labels: the world as it was")
    lake = dataplane.lake_of(spec)
    deadline = time.monotonic() + CALM_TIMEOUT_S
    with LabelledTraffic(url, key, label_column=spec.data.label_column) as calm, \
            console.status("sending requests…") as status:
        while len(read_reports(lake)) < 2:
            if time.monotonic() > deadline:
                raise LoopDidNotClose(f"the monitor checked fewer than 2 windows in {CALM_TIMEOUT_S} s: see "
                                      "`mlray monitor status`")
            status.update(f"{calm.sent} requests sent, {len(read_reports(lake))} windows checked")
            _check_traffic(calm)
            time.sleep(1)
    for report in reversed(read_reports(lake)):
        console.print(f"window {report.seq}: {report.rows} rows, {report.verdict}"
                      f" (drifted columns: {', '.join(report.drifted) or 'none'})")


def _drift(spec: ProjectSpec, url: str, key: str, sizes: Sizes) -> Incident:
    from mlray.incidents import Incidents

    _step(8, "the world moves: new files land upstream and the traffic drifts")
    path = land_drifted_files(spec, sizes.drifted_rows)
    console.print(f"{sizes.drifted_rows:,} drifted transactions landed in {path}")
    incidents, seen = Incidents(dataplane.lake_of(spec)), 0
    deadline = time.monotonic() + LOOP_TIMEOUT_S
    with LabelledTraffic(url, key, shift=DRIFT, label_column=spec.data.label_column, seed=5000) as drifted, \
            console.status("sending drifted requests…") as status:
        while time.monotonic() < deadline:
            found = incidents.all()
            events = found[0].events if found else []
            for event in events[seen:]:
                console.print(f"incident {found[0].incident_id}: [bold]{event.status}[/] — {event.detail}")
            seen = len(events)
            if found and found[0].closed:
                if found[0].status == IncidentStatus.PROMOTED:  # until the new champion answers
                    _wait_for_version(drifted, found[0].challenger, status)
                return found[0]
            status.update(f"{drifted.sent} drifted requests sent; answered by {dict(drifted.versions)}")
            _check_traffic(drifted)
            time.sleep(1)
    raise LoopDidNotClose(f"no outcome {LOOP_TIMEOUT_S} s after the drift began: see `mlray monitor status` and "
                          "`mlray incidents list`")


def _wait_for_version(traffic: LabelledTraffic, version: str | None, status, last: int = 20) -> None:
    """After a promotion, until the last requests are answered by the new champion (at most a minute)."""
    deadline = time.monotonic() + 60
    while version and traffic.answered[-last:].count(version) < last and time.monotonic() < deadline:
        status.update(f"waiting for every request to reach version {version}")
        time.sleep(0.5)


def _check_traffic(traffic: LabelledTraffic) -> None:
    if traffic.failures and not traffic.answered:
        raise LoopDidNotClose(f"the service answers no request: {traffic.last_error}")


def _summary(spec: ProjectSpec, folder: Path, url: str, key: str, incident: Incident) -> None:
    from mlray.monitor.jobs import jobs_address
    from mlray.registry.models import Registry

    _step(9, f"the loop closed: incident {incident.incident_id} ended {incident.status}")
    console.print(table(f"registered versions of {spec.name}", ["version", "aliases", "test ROC AUC", "table version"],
                        [[v["version"], ", ".join(v["aliases"]) or ("rejected" if v["rejected"] else ""),
                          f"{v['metrics'].get('test_roc_auc', float('nan')):.3f}", v["table_version"]]
                         for v in Registry(spec).versions()]))
    spec_file = folder / "mlray.yaml"
    console.print("\n[bold]where to look[/]")
    for what, how in [
        ("Ray dashboard (jobs, actors, Serve)", jobs_address()),
        ("MLflow UI", f"mlflow ui --backend-store-uri {spec.platform.tracking_uri}"),
        ("the endpoint", f"curl -H 'Authorization: Bearer {key}' {url}/v1/models   (the API: {url}/openapi.json, with the key)"),
        ("the audit log", f"mlray audit --spec {spec_file}"),
        ("the incident", f"mlray incidents show {incident.incident_id} --spec {spec_file}"),
        ("drift reports", f"mlray drift report --spec {spec_file}"),
    ]:
        console.print(f"  {what}:\n    {escape(how)}", soft_wrap=True, highlight=False)


@command
def demo(
    workdir: Annotated[Path, typer.Option("--dir", help="Folder for the spec, files and state (cleared first).")] =
    Path("mlray-demo"),
    fast: Annotated[bool, typer.Option("--fast", help="Small sizes (for tests): a smaller model, shorter steps.")] = False,
    keep_serving: Annotated[bool, typer.Option("--keep-serving", help="Leave the service up until Ctrl-C.")] = False,
    rows: Annotated[Optional[int], typer.Option(min=3000, help="Transactions in the landing files (default by --fast).")] = None,
    port: Annotated[int, typer.Option(help="The service's HTTP port.")] = 8000,
    name: Annotated[str, typer.Option(help="The project's name (its model, actors and Serve application).")] =
    "card-fraud",
) -> None:
    """The whole loop on an embedded local Ray: data → features → training and a sweep → serving → drift → retraining
    through the Jobs API → canary → promotion."""
    from mlray.runtime import connect

    sizes = Sizes.of(fast, rows)
    fresh_folder(workdir)
    spec, key = write_project(workdir, sizes, port, name)
    _step(1, f"the project: {workdir / 'mlray.yaml'}, state in {spec.platform.state_dir}")
    with console.status("starting an embedded Ray…"):
        connect(spec.platform)
    try:
        _data_plane(spec, workdir, sizes.rows)
        _models(spec)
        url = _serve(spec)
        _calm_traffic(spec, url, key)
        incident = _drift(spec, url, key, sizes)
        _summary(spec, workdir, url, key, incident)
        if incident.status != IncidentStatus.PROMOTED:
            raise LoopDidNotClose(f"the retrained model was not promoted ({incident.status}): see "
                                  f"`mlray incidents show {incident.incident_id}`")
        if keep_serving:
            serve_until_interrupted()
    except LoopDidNotClose as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(1) from None
    finally:
        stop_service(spec)
