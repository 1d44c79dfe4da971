"""The monitor's logic in plain Python (the actor in `actor.py` runs `step` on a timer), composed of parts with one
job each:

- `labels.LabelJoin`: new feedback labels joined with the predictions they label, into live quality;
- `windows.WindowStream`: the complete windows of served rows from the checkpoint's cursor on;
- `checks.WindowChecks` / `checks.ReportPublisher`: a window checked against the serving champion's reference
  (Alibi Detect and live quality), its report written once, then published as metrics and alerts;
- `retraining.RetrainingPolicy` / `retraining.RetrainingJobs`: the policy opens incidents and submits their
  retraining jobs (or waits for approval); the jobs are followed until their rollout owns the incident, or fail;
- `upkeep.LogUpkeep`: the log's tables compacted and expired;
- `checkpoint.CheckpointStore`: the `MonitorCheckpoint` (position, history, live-quality buffers) under the lake root
  (`monitor_state`), written with a compare-and-swap after every change, so a restarted monitor resumes exactly
  where the last one stopped.

Its collaborators come through small interfaces (`mlray.control.ports`): a `Clock`, a `ServingView` (the champion
and the rollout; `serving.ServingTable` reads the control plane's table), a `JobSubmitter` (`jobs.RayJobs`), the
reference loader and detectors, so unit tests drive it on fakes. Every write that a crash could repeat carries an id
derived from the window: the report, the incident and the job.
"""

from __future__ import annotations

import logging
from typing import Callable

import pyarrow as pa

from mlray.audit import AuditLog
from mlray.control.clock import SYSTEM_CLOCK, Clock
from mlray.control.ports import JobSubmitter, ServingView
from mlray.control.state import MonitorCheckpoint, WindowReport
from mlray.incidents import Incidents
from mlray.lake import Lake
from mlray.lake.specs import spec_digest
from mlray.lake.state import StateConflict, StateTable
from mlray.metrics import monitor as ray_gauges
from mlray.monitor.checkpoint import STATE_TABLE, CheckpointStore
from mlray.monitor.checks import ReportPublisher, WindowChecks, history_entry, summary
from mlray.monitor.detectors import Detectors
from mlray.monitor.jobs import RayJobs
from mlray.monitor.labels import LabelJoin
from mlray.monitor.live import LiveQuality
from mlray.monitor.reference import Reference, load_reference
from mlray.monitor.retraining import RetrainingJobs, RetrainingPolicy
from mlray.monitor.serving import ServingTable
from mlray.monitor.upkeep import LogUpkeep
from mlray.monitor.windows import Cursor, WindowStream
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)
HISTORY = 50  # windows kept in the checkpoint (the policy looks at the last n)


class Monitor:
    """Constructed without I/O (a restart while the lake or MLflow is down succeeds); the checkpoint is read by the
    first `step` or `status`. `jobs` defaults to the Ray Jobs API at `jobs_address` (None: the connected cluster's),
    `serving` to the control plane's `serving_state` table."""

    def __init__(self, spec: ProjectSpec, jobs_address: str | None = None, *, clock: Clock = SYSTEM_CLOCK,
                 serving: ServingView | None = None, jobs: JobSubmitter | None = None,
                 load_reference: Callable[[ProjectSpec, str], Reference] = load_reference,
                 make_detectors: Callable[..., Detectors] = Detectors, gauges: Callable[[], dict] = ray_gauges,
                 spec_revision: str | None = None):
        self.spec, self.monitor_rules, self.clock = spec, spec.monitor, clock
        self.spec_revision = spec_revision or spec_digest(spec)  # which spec it runs on, for its status
        self.lake = Lake.from_platform(spec.platform)
        self.checkpoints = CheckpointStore(StateTable(self.lake, STATE_TABLE))
        self.incidents, self.audit = Incidents(self.lake), AuditLog(spec.platform)
        self.serving = serving or ServingTable(spec, self.lake)
        self.labels = LabelJoin(self.lake, spec.serve, clock, spec.train.slices)
        self.windows = WindowStream(self.lake, spec.serve, spec.monitor, clock)
        self.checks = WindowChecks(spec, self.lake, self.serving, clock, load_reference, make_detectors)
        self.publisher = ReportPublisher(spec, gauges)
        self.retraining_jobs = RetrainingJobs(spec, self.incidents, self.audit, jobs or RayJobs(spec, jobs_address),
                                              self.serving)
        self.policy = RetrainingPolicy(spec, self.incidents, self.audit, self.retraining_jobs, clock, gauges)
        self.upkeep = LogUpkeep(spec, self.lake, clock)
        self.checkpoint: MonitorCheckpoint | None = None
        self.live: LiveQuality | None = None
        self.resuming = False  # the next window may have been reported by a monitor that died before its checkpoint

    # ------------------------------------------------------------------ checkpoint

    def _load(self) -> None:
        """The checkpoint; a first start writes one at once, so a monitor killed before its first window resumes
        from where it started rather than from the log's end at its restart."""
        found = self.checkpoints.read()
        self.checkpoint = found or self._fresh()
        self.live = LiveQuality(self.monitor_rules.quality_rows, self.checkpoint.quality)
        self.resuming = found is not None
        if found is None:
            try:
                self._save()
            except StateConflict:  # another monitor started first: _save took its checkpoint
                pass

    def _fresh(self) -> MonitorCheckpoint:
        """A new monitor starts at the end of the log: it watches traffic from now on."""
        serve, now = self.spec.serve, self.clock.now()
        log_start = self.lake.latest_version(serve.inference_log_table) + 1 \
            if self.lake.exists(serve.inference_log_table) else 0
        labels_start = self.lake.latest_version(serve.labels_table) if self.lake.exists(serve.labels_table) else -1
        return MonitorCheckpoint(created=now, cursor=(log_start, 0), labels_version=labels_start, last_upkeep=now)

    def _save(self) -> None:
        """Commit the checkpoint on top of the revision it was read at; if another monitor wrote meanwhile, take
        its."""
        self.checkpoint.quality = self.live.to_state()
        try:
            self.checkpoints.write(self.checkpoint)
        except StateConflict:
            log.warning("the monitor state of %s was written by another monitor; continuing from it", self.spec.name)
            self._load()
            raise

    # ------------------------------------------------------------------ one step

    def step(self) -> dict:
        """One poll: labels → windows (each checked, reported, handed to the policy, checkpointed) → the schedule →
        the retraining jobs → upkeep. Returns what happened."""
        if self.checkpoint is None:
            self._load()
        self.checks.begin_step()
        labelled = self.labels.take(self.checkpoint, self.live)
        reports = self._check_windows()
        if labelled and not reports:
            self._save()
        if self.policy.on_schedule(self.checkpoint):
            self._save()
        self.retraining_jobs.follow()
        if self.upkeep.run(self.checkpoint):
            self._save()
        return {"labels": labelled, "windows": [summary(r) for r in reports], "seq": self.checkpoint.seq}

    def status(self) -> dict:
        if self.checkpoint is None:
            self._load()
        checkpoint, detectors = self.checkpoint, self.checks.detectors
        quality = self.checks.live_quality(self.live, detectors.reference) if detectors else {}
        return {"project": self.spec.name, "epoch": checkpoint.epoch, "windows": checkpoint.seq,
                "cursor": list(checkpoint.cursor), "champion": checkpoint.champion,
                "labels_version": checkpoint.labels_version, "labelled": self.live.counts(), "live_quality": quality,
                "pending_labels": len(checkpoint.pending_labels), "history": checkpoint.history[-10:],
                "open_incidents": [i.incident_id for i in self.incidents.open()],
                "revision": self.checkpoints.revision, "spec": self.spec_revision}

    # ------------------------------------------------------------------ windows

    def _check_windows(self) -> list[WindowReport]:
        reports = []
        for window, start, end in self.windows.complete(Cursor(*self.checkpoint.cursor)):
            try:
                report = self._close(window, start, end)
            except Exception:
                self.resuming = True  # its report may be written: the next try must take that one
                raise
            reports.append(report)
            if report.end != end.to_list():  # recovered: the stream restarts where that report ended
                break
        return reports

    def _close(self, window: pa.Table, start: Cursor, end: Cursor) -> WindowReport:
        """Check, report and act on one window; a window already reported (by a monitor that died before its
        checkpoint was saved) keeps that report."""
        checkpoint, seq = self.checkpoint, self.checkpoint.seq
        resuming, self.resuming = self.resuming, False
        report = self.checks.report(window, start, end, checkpoint, self.live, resuming)
        checkpoint.history = [*checkpoint.history, history_entry(report)][-HISTORY:]
        checkpoint.cursor, checkpoint.seq = tuple(report.end), seq + 1
        self.publisher.publish(report)
        self.policy.evaluate(f"w{seq}", checkpoint, schedule_due=False)
        self._save()
        return report
