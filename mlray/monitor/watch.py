"""The monitor's logic in plain Python (the actor in `actor.py` runs `step` on a timer).

Each step reads the feedback labels and the served rows appended since its checkpoint, closes every window that is
complete, checks it against the serving champion's reference (Alibi Detect), reports it, and lets the retraining
policy decide; it follows the retraining jobs it started, and keeps the log's tables tidy. Its position, open
window, history and live-quality buffers are one document under the lake root (`monitor_state`), written with a
compare-and-swap after every change, so a restarted monitor resumes exactly where the last one stopped. Every
write that a crash could repeat carries an id derived from the window: the report, the incident and the job.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlray.audit import AuditLog
from mlray.control.state import INCIDENT_CLOSED, INCIDENT_FOLLOWED, IncidentStatus
from mlray.incidents import Incidents, record_rollout_outcome
from mlray.lake import Lake
from mlray.lake.inference import LABELS_SCHEMA, appended_since, dedupe_labels, flat_inputs
from mlray.lake.state import SERVING_STATE, StateConflict, StateTable
from mlray.monitor import jobs
from mlray.monitor.alerts import alert
from mlray.monitor.detectors import Detectors
from mlray.monitor.live import DEFAULT_METRIC, LiveQuality, quality_drop
from mlray.monitor.policy import decide, window_drifted
from mlray.monitor.reference import load_reference
from mlray.monitor.reports import read_reports, write_report
from mlray.monitor.windows import Cursor, cursor_after, read_from, window_end
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)
STATE_TABLE = "monitor_state"
ACTOR = "monitor"
HISTORY = 50  # windows kept in the state (the policy looks at the last n)
PENDING_LABELS = 10_000  # labels waiting for their logged prediction
PENDING_FOR = timedelta(hours=1)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Monitor:
    """Constructed without I/O (a restart while the lake or MLflow is down succeeds); the checkpoint is read by the
    first `step` or `status`."""

    def __init__(self, spec: ProjectSpec, jobs_address: str | None = None):
        self.spec, self.rules = spec, spec.monitor
        self.lake = Lake.from_platform(spec.platform)
        self.table = StateTable(self.lake, STATE_TABLE)
        self.incidents, self.audit = Incidents(self.lake), AuditLog(spec.platform)
        self._registry = None
        self.jobs_address, self._jobs = jobs_address, None
        self.detectors: Detectors | None = None
        self.champion: str | None = None
        self.state: dict | None = None

    @property
    def registry(self):
        from mlray.registry.models import Registry

        if self._registry is None:
            self._registry = Registry(self.spec)
        return self._registry

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        """The checkpoint; a first start writes one at once, so a monitor killed before its first window resumes
        from where it started rather than from the log's end at its restart."""
        self.revision, doc = self.table.read()
        self.state = doc or self._fresh()
        self.live = LiveQuality(self.rules.quality_rows, self.state["quality"])
        self.resuming = doc is not None  # the next window may have been reported by a monitor that died after
        if doc is None:
            try:
                self._save()
            except StateConflict:  # another monitor started first: _save took its state
                pass

    def _fresh(self) -> dict:
        """A new monitor starts at the end of the log: it watches traffic from now on."""
        serve = self.spec.serve
        log_start = self.lake.latest_version(serve.inference_log_table) + 1 \
            if self.lake.exists(serve.inference_log_table) else 0
        labels_start = self.lake.latest_version(serve.labels_table) if self.lake.exists(serve.labels_table) else -1
        return {"epoch": uuid.uuid4().hex[:8], "created": _now().isoformat(), "cursor": [log_start, 0], "seq": 0,
                "labels_version": labels_start, "history": [], "quality": {}, "pending_labels": [],
                "champion": None, "schedule_slot": 0, "last_upkeep": _now().isoformat()}

    def _save(self) -> None:
        """Commit the state on top of the revision it was read at; if another monitor wrote meanwhile, take its."""
        self.state["quality"] = self.live.to_state()
        try:
            self.revision = self.table.write(self.state, self.revision, writer=ACTOR)
        except StateConflict:
            log.warning("the monitor state of %s was written by another monitor; continuing from it", self.spec.name)
            self._load()
            raise

    def jobs(self):
        if self._jobs is None:
            self._jobs = jobs.client(self.jobs_address)
        return self._jobs

    # ------------------------------------------------------------------ one step

    def step(self) -> dict:
        """One poll: labels, complete windows, retraining jobs, upkeep. Returns what happened."""
        if self.state is None:
            self._load()
        self.champion = None  # read from the serving plan once per step, when a window closes
        labelled = self._labels()
        reports = self._windows()
        if labelled and not reports:
            self._save()
        self._schedule()
        self._follow_incidents()
        self._upkeep()
        return {"labels": labelled, "windows": [_summary(r) for r in reports], "seq": self.state["seq"]}

    def status(self) -> dict:
        if self.state is None:
            self._load()
        champion = self.state["champion"]
        reference = self.detectors.reference if self.detectors else None
        quality = self._live_quality(reference) if reference else {}
        return {"project": self.spec.name, "epoch": self.state["epoch"], "windows": self.state["seq"],
                "cursor": self.state["cursor"], "champion": champion, "labels_version": self.state["labels_version"],
                "labelled": self.live.counts(), "live_quality": quality,
                "pending_labels": len(self.state["pending_labels"]), "history": self.state["history"][-10:],
                "open_incidents": [i["incident_id"] for i in self.incidents.open()], "revision": self.revision}

    # ------------------------------------------------------------------ windows

    def _windows(self) -> list[dict]:
        cursor = Cursor(*self.state["cursor"])
        rows = read_from(self.lake, self.spec.serve.inference_log_table, cursor)
        reports = []
        grace = self.rules.poll_interval + timedelta(seconds=self.spec.serve.log_flush_s + 1)
        while rows is not None and rows.num_rows:
            end = window_end(rows.column("at").to_pylist(), _now(), self.rules, grace)
            if end is None:
                break
            after = cursor_after(rows, end, cursor)
            try:
                report = self._close(rows.slice(0, end), cursor, after)
            except Exception:
                self.resuming = True  # its report may be written: the next try must take that one
                raise
            reports.append(report)
            if report["end"] != after.to_list():  # recovered: the stream restarts where that report ended
                break
            cursor, rows = Cursor(*report["end"]), rows.slice(end)
        return reports

    def _close(self, window: pa.Table, start: Cursor, end: Cursor) -> dict:
        """Check, report and act on one window; a window already reported (by a monitor that died before its state
        was saved) keeps that report."""
        epoch, seq = self.state["epoch"], self.state["seq"]
        found = read_reports(self.lake, epoch, seq) if self.resuming else []
        self.resuming = False
        report = found[0] if found else self._check(window, start, end)
        if not found:
            write_report(self.lake, report)
        entry = {"seq": seq, "drifted": list(report["drifted"]), "score_drift": bool(report["score_drift"]),
                 "quality_drop": report["quality_drop"], "rows": report["rows"]}
        self.state["history"] = [*self.state["history"], entry][-HISTORY:]
        self.state["cursor"], self.state["seq"] = list(report["end"]), seq + 1
        self._publish(report)
        self._evaluate(f"w{seq}", schedule_due=False)
        self._save()
        return report

    def _check(self, window: pa.Table, start: Cursor, end: Cursor) -> dict:
        reference = self._reference()
        served = window.filter(pc.and_(pc.is_null(window.column("error")), pc.is_valid(window.column("score"))))
        started = time.perf_counter()
        result = self.detectors.check(flat_inputs(window), served.column("score").to_numpy())
        seconds = time.perf_counter() - started
        quality = self._live_quality(reference)
        metric = self.rules.retrain.quality_metric or DEFAULT_METRIC[reference.task]
        drop = quality_drop(quality.get(reference.version, {}), reference.offline, metric)
        times = window.column("at")
        report = {"seq": self.state["seq"], "epoch": self.state["epoch"], "at": _now(),
                  "first_row_at": pc.min(times).as_py(), "last_row_at": pc.max(times).as_py(),
                  "rows": window.num_rows, "champion": reference.version, "start": start.to_list(),
                  "end": end.to_list(), "columns": result.columns, "p_values": result.p_values,
                  "distances": result.distances, "threshold": result.threshold, "drifted": result.drifted,
                  "score_p_value": result.score_p_value, "score_distance": result.score_distance,
                  "score_drift": result.score_drift, "mmd_p_value": result.mmd_p_value, "mmd_drift": result.mmd_drift,
                  "quality": quality, "quality_drop": drop, "seconds": seconds}
        entry = {"drifted": result.drifted, "score_drift": result.score_drift}
        return report | {"verdict": "drift" if window_drifted(self.rules.retrain, entry) else "ok"}

    def _live_quality(self, reference) -> dict[str, dict[str, float]]:
        return self.live.metrics(reference.task, reference.classes, reference.threshold, self.rules.min_labels,
                                 self.rules.min_class_labels)

    def _reference(self):
        """The detectors of the serving champion: built when it changes, else reused."""
        champion = self.champion = self.champion or self._serving_champion()
        if champion is None:
            raise RuntimeError(f"model '{self.spec.name}' has no champion to compare traffic with")
        if self.detectors is None or self.detectors.reference.version != champion:
            log.info("building the drift reference of %s v%s", self.spec.name, champion)
            self.detectors = Detectors(load_reference(self.spec, champion), self.rules)
            self.state["champion"] = champion
        return self.detectors.reference

    def _serving_champion(self) -> str | None:
        """The champion the control plane serves (its committed plan: no registry call, so windows are checked while
        MLflow is down); the registry's alias while nothing is served."""
        plan = (StateTable(self.lake, SERVING_STATE).read()[1] or {}).get("plan")
        return plan["champion"] if plan else self.registry.version_of("champion")

    def _publish(self, report: dict) -> None:
        from mlray.metrics import monitor

        gauges, model = monitor(), self.spec.name
        for column, p, d in zip(report["columns"], report["p_values"], report["distances"]):
            tags = {"model": model, "feature": column}
            gauges["p_value"].set(p, tags=tags)
            gauges["distance"].set(d, tags=tags)
            gauges["drift"].set(float(column in report["drifted"]), tags=tags)
        if report["score_p_value"] is not None:
            tags = {"model": model, "model_version": report["champion"]}
            gauges["score_p_value"].set(report["score_p_value"], tags=tags)
            gauges["score_drift"].set(float(report["score_drift"]), tags=tags)
        for version, metrics in report["quality"].items():
            for metric, value in metrics.items():
                gauges["quality"].set(value, tags={"model": model, "model_version": version, "metric": metric})
        gauges["windows"].inc(tags={"model": model, "verdict": report["verdict"]})
        if report["verdict"] == "drift":
            alert(model, "drift", f"window {report['seq']}: drifted columns {', '.join(report['drifted']) or 'none'}"
                                  f"; score drift {report['score_drift']}", _summary(report), self.rules.alert_webhook)

    # ------------------------------------------------------------------ labels

    def _labels(self) -> int:
        """Join new feedback with the logged predictions (every version that scored the row, shadows too); a label
        that came before its prediction was flushed waits (up to an hour). Returns the labels taken."""
        new = appended_since(self.lake, self.spec.serve.labels_table, self.state["labels_version"])
        parts = [pa.Table.from_pylist([dict(zip(LABELS_SCHEMA.names, (r, i, label, datetime.fromisoformat(at))))
                                       for r, i, label, at in self.state["pending_labels"]], schema=LABELS_SCHEMA)]
        if new is not None and new.num_rows:
            self.state["labels_version"] = int(pc.max(new.column("_commit_version")).as_py())
            parts.append(new.select(LABELS_SCHEMA.names).cast(LABELS_SCHEMA))
        labels = dedupe_labels(pa.concat_tables(parts))
        if labels.num_rows == 0:
            return 0
        matched = self._predictions_for(labels)
        for row in matched.to_pylist():
            self.live.add(row["model_version"], f"{row['request_id']}:{row['row']}", row["label"], row["prediction"],
                          row["score"])
        found = set(zip(matched.column("request_id").to_pylist(), matched.column("row").to_pylist()))
        cutoff = _now() - PENDING_FOR
        waiting = [[r["request_id"], r["row"], r["label"], r["at"].isoformat()] for r in labels.to_pylist()
                   if (r["request_id"], r["row"]) not in found and r["at"] >= cutoff]
        taken = len(found) + (new.num_rows if new is not None else 0)
        self.state["pending_labels"] = waiting[-PENDING_LABELS:]
        return taken

    def _predictions_for(self, labels: pa.Table) -> pa.Table:
        table = self.spec.serve.inference_log_table
        if not self.lake.exists(table):
            return pa.table({"request_id": pa.array([], pa.string()), "row": pa.array([], pa.int32())})
        logged = self.lake.open(table).to_pyarrow_dataset().to_table(
            filter=pc.field("request_id").isin(pc.unique(labels.column("request_id"))),
            columns=["request_id", "row", "model_version", "prediction", "score"])
        return labels.join(logged, keys=["request_id", "row"], join_type="inner")

    # ------------------------------------------------------------------ retraining

    def _schedule(self) -> None:
        period = self.rules.retrain.schedule
        if period is None:
            return
        slot = int((_now() - datetime.fromisoformat(self.state["created"])) / period)
        if slot > self.state["schedule_slot"]:
            self._evaluate(f"s{slot}", schedule_due=True)
            self.state["schedule_slot"] = slot
            self._save()

    def _evaluate(self, key: str, schedule_due: bool) -> str | None:
        """Ask the policy; on a trigger, open the incident `<epoch>-<key>` and submit its job (or wait for approval).
        The id depends only on the window (or schedule slot), so doing this twice opens one incident and one job."""
        retrain, history = self.rules.retrain, self.state["history"]
        drop = history[-1]["quality_drop"] if history else None
        incidents = self.incidents.all()
        open_ids = [i["incident_id"] for i in incidents if i["status"] not in INCIDENT_CLOSED]
        incident_id = f"{self.state['epoch']}-{key}"
        if any(i["incident_id"] == incident_id for i in incidents):
            self._advance(incident_id)  # this very trigger was acted on before a restart: finish what it started
            return incident_id
        trigger, why = decide(retrain, history, drop, _now(), [i["opened"] for i in incidents],
                              open_ids[0] if open_ids else None, schedule_due)
        if trigger is None:
            if why:
                log.info("retraining held back: %s", why)
            return None
        self.incidents.record(incident_id, IncidentStatus.OPEN, ACTOR, cause=trigger.cause, detail=trigger.detail,
                              evidence=trigger.evidence, windows=trigger.evidence.get("windows", []))
        self.audit.append("incident.open", f"{self.spec.name}", trigger.detail, after={"incident": incident_id,
                          "cause": trigger.cause}, actor=f"monitor:{self.spec.name}")
        from mlray.metrics import monitor

        monitor()["incidents"].inc(tags={"model": self.spec.name, "cause": trigger.cause})
        alert(self.spec.name, "incident", f"incident {incident_id} ({trigger.cause}): {trigger.detail}",
              {"incident_id": incident_id, **trigger.evidence}, self.rules.alert_webhook)
        if retrain.mode == "approval":
            self.incidents.record(incident_id, IncidentStatus.AWAITING_APPROVAL, ACTOR,
                                  detail=f"approve with `mlray incidents approve {incident_id}`")
            return incident_id
        self._submit(incident_id)
        return incident_id

    def _advance(self, incident_id: str) -> None:
        incident = self.incidents.get(incident_id)
        if incident["status"] in (IncidentStatus.OPEN, IncidentStatus.APPROVED):
            self._submit(incident_id)

    def _submit(self, incident_id: str) -> str:
        sid, submitted = jobs.submit_retrain(self.jobs(), self.spec, incident_id)
        if self.incidents.record(incident_id, IncidentStatus.SUBMITTED, ACTOR, job_id=sid, detail=f"Ray job {sid}"):
            self.audit.append("retrain.submit", self.spec.name, f"incident {incident_id}", after={"job_id": sid},
                              actor=f"monitor:{self.spec.name}")
        log.info("retraining job %s for incident %s (%s)", sid, incident_id, "submitted" if submitted else "existed")
        return sid

    def _follow_incidents(self) -> None:
        """Submit approved incidents (and open ones whose submission failed, e.g. with the Jobs API down); record a
        job that ended without its outcome as failed (an alert, never a second job). A `retrained` incident whose
        job started its challenger's rollout belongs to that rollout: its controller records the verdict, however
        long the rollout runs, so the job's end (it ends once the rollout started) is no failure."""
        for incident in self.incidents.open():
            status, iid = incident["status"], incident["incident_id"]
            if status == IncidentStatus.APPROVED or (status == IncidentStatus.OPEN and self.rules.retrain.mode == "auto"):
                self._submit(iid)
            elif status in INCIDENT_FOLLOWED and incident.get("job_id"):
                # the job's status first: a job that ended had committed its rollout's start before, so the rollout
                # read after it names the incident
                job = jobs.job_status(self.jobs(), incident["job_id"])
                if job in ("FAILED", "STOPPED", None) or (job == "SUCCEEDED" and self._still_open(iid)):
                    if status == IncidentStatus.RETRAINED and self._rollout_owns(iid):
                        continue
                    self._job_failed(incident, job)

    def _still_open(self, incident_id: str) -> bool:
        return self.incidents.get(incident_id)["status"] not in INCIDENT_CLOSED

    def _rollout_owns(self, incident_id: str) -> bool:
        """Whether the control plane's rollout answers this incident (its job started it). One that has ended has
        its outcome recorded here too, in case its controller did not (it was down): the write is idempotent by
        incident and status, so the controller's own write and this one land once."""
        rollout = (StateTable(self.lake, SERVING_STATE).read()[1] or {}).get("rollout")
        if not rollout or rollout.get("incident") != incident_id:
            return False
        record_rollout_outcome(self.incidents, rollout, ACTOR,
                               lambda entry: self.audit.append(target=self.spec.name, **entry))
        return True

    def _job_failed(self, incident: dict, job: str | None) -> None:
        detail = f"retraining job {incident['job_id']} " + ({None: "is unknown to the Jobs API",
                                                            "SUCCEEDED": "ended without an outcome"}.get(job)
                                                           or f"ended {job}")
        self.incidents.record(incident["incident_id"], IncidentStatus.FAILED, ACTOR, detail=detail)
        self.audit.append("retrain.failed", self.spec.name, detail, actor=f"monitor:{self.spec.name}")
        alert(self.spec.name, "job_failed", f"incident {incident['incident_id']}: {detail}",
              {"incident_id": incident["incident_id"]}, self.rules.alert_webhook)

    # ------------------------------------------------------------------ upkeep

    def _upkeep(self) -> None:
        """Compact the log's and labels' small files and drop rows past the retention, every `compact_every`."""
        from mlray.lake.upkeep import compact_and_expire

        if _now() - datetime.fromisoformat(self.state["last_upkeep"]) < self.rules.compact_every:
            return
        for table in (self.spec.serve.inference_log_table, self.spec.serve.labels_table):
            if self.lake.exists(table):
                log.info("upkeep of %s: %s", table, compact_and_expire(self.lake, table, self.rules.log_retention))
        self.state["last_upkeep"] = _now().isoformat()
        self._save()


def _summary(report: dict) -> dict:
    return {k: report[k] for k in ("seq", "rows", "champion", "drifted", "score_drift", "score_p_value", "verdict",
                                   "quality_drop")} | {"min_p_value": float(np.min(report["p_values"]))
                                                      if report["p_values"] else None}
