"""The rollout controller: a long-lived Ray actor that walks a challenger through the spec's steps.

At every step it sets the traffic (shadow, then growing weights). At every tick it looks at the challenger against the
champion on the inference log and feedback labels since the rollout began (`mlray.rollout.analysis`): one always-valid
sequential test per check over the whole rollout, so looking at every tick does not roll back an equal challenger by
chance, and the error guarantee (`rollout.checks.alpha`) holds across steps. A failed check counts at once (a plain
threshold such as divergence only once the step's `interval` is over), each failure on new traffic, and
`failure_limit` failures roll back by themselves (challenger weight 0, the version tagged with the reason). A step
moves on once its interval is over, its data is in (`min_requests`, the 100 champion answers a p99 needs, labels when
required) and nothing failed; a check still undecided then does not hold it: the guarantee is against false rollbacks,
and a harmful challenger is still caught later, as its counts keep cumulating through the next steps. Passing every
step promotes: the `champion` alias moves, the old champion becomes `previous`. Every change goes to the audit log;
the rollout's history keeps every decision and the latest look. The controller owns no state: the rollout's state,
the plan and the aliases belong to the control plane (`mlray.serve.control`), which takes each of its changes only if
the rollout is still where the controller saw it. So a person's rollback in between wins, and a restarted controller
goes on. It runs on the spec revision the control plane holds (a deploy hands a new one over); a rollout keeps the
rules it started with.

A rollout started for an incident (the retraining job passes its id, which the rollout's state keeps) owns that
incident's outcome: once the rollout ends, promoted, rolled back, or stopped by a change made by hand (seen when the
controller reloads the state), the controller records the end on the incident (`mlray.incidents`), once per
incident and status, and again on a later tick if the write failed or the controller restarted in between. The
analysis knows the incident too: a challenger retrained because the world moved may score unlike the champion.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from mlray.actors import TimedShell, answer, detached, restarted
from mlray.audit import AuditLog
from mlray.control.clock import SYSTEM_CLOCK, Clock
from mlray.control.state import ROLLOUT_ACTIVE, ROLLOUT_ENDED, RolloutState, RolloutStatus
from mlray.errors import UserError
from mlray.incidents import Incidents, record_rollout_outcome
from mlray.lake import Lake
from mlray.lake.inference import appended_since, dedupe_labels
from mlray.lake.specs import LiveSpec
from mlray.metrics import rollout as rollout_gauges
from mlray.registry.models import Registry
from mlray.rollout.analysis import Analysis, Compared, analyze
from mlray.serve import control, deploy
from mlray.serve.control import ROLLBACK_TAG
from mlray.serve.routing import TrafficPlan
from mlray.spec import ProjectSpec, RolloutSpec
from mlray.window_reports import read_reports

__all__ = ["ROLLBACK_TAG", "Rollout", "RolloutClient", "RolloutController", "client", "controller"]
log = logging.getLogger(__name__)
ESTIMATED_EVIDENCE = ("roc_auc", "precision", "recall")  # the estimates that can explain a score divergence
ACTOR = "rollout-controller"
# what the analysis reads of the inference log and the labels (never the logged inputs)
ANALYSED_LOG_COLUMNS = ["request_id", "row", "error", "latency_ms", "score", "prediction", "shadow", "model_version", "at",
               "pinned"]
LABEL_COLUMNS = ["request_id", "row", "label", "at"]


class Rollout:
    """The rollout logic, in plain Python (the actor below runs it on a timer)."""

    def __init__(self, spec: ProjectSpec, actor: str = f"controller:{ACTOR}", clock: Clock = SYSTEM_CLOCK):
        self.live, self.actor, self.clock = LiveSpec(spec, restarted()), actor, clock  # the revision the control plane holds
        self._connect()
        self.state: RolloutState | None = None
        self.revision = 0  # the control plane's rollout revision this state was read at
        self.recorded: set[tuple[str, str]] = set()  # (incident, status) outcomes this process has recorded

    @property
    def spec(self) -> ProjectSpec:
        return self.live.spec

    def _connect(self) -> None:
        self.lake = Lake.from_platform(self.spec.platform)
        self.incidents = Incidents(self.lake)

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        """The rollout as the control plane has it now, on the spec revision it holds."""
        snapshot = control.client(self.spec).snapshot()
        if self.live.follow(snapshot.get("spec")):
            self._connect()
        self.state = RolloutState.model_validate(snapshot["rollout"]) if snapshot["rollout"] else None
        self.revision = snapshot["rollout_revision"]

    def _save(self, plan=None, audit: list[dict] = (), promote: str | None = None,
              tag: tuple[str, str] | None = None) -> None:
        """Hand the new state (and plan, audit entries, promotion or rollback tag) to the control plane; it refuses
        them (StateConflict) if the rollout changed since `_load`."""
        if plan is not None:
            deploy.check_served(self.spec, plan)
        target = f"{self.spec.name} v{self.state.challenger}"
        snapshot = control.client(self.spec).update_rollout(
            self.revision, self.state.model_dump(mode="json"), self.actor, plan=None if plan is None else plan.to_dict(),
            audit=[{"target": target} | entry for entry in audit], promote=promote, tag=tag)
        self.revision = snapshot["rollout_revision"]
        self._publish()

    def _publish(self) -> None:
        """The rollout's step, challenger weight and failures as Prometheus gauges."""
        s, gauges = self.state, rollout_gauges()
        tags = {"model": self.spec.name, "challenger": s.challenger}
        active = s.status in ROLLOUT_ACTIVE
        step = self.rules.steps[s.step] if active else None
        gauges["step"].set(s.step + 1 if active else 0, tags=tags)
        gauges["weight"].set(float(step) / 100 if active and step != "shadow" else
                             (1.0 if s.status == RolloutStatus.PROMOTED else 0.0), tags=tags)
        gauges["failures"].set(s.failures, tags=tags)

    def status(self) -> dict | None:
        self._load()
        return self._view()

    def _view(self) -> dict | None:
        return None if self.state is None else self.state.model_dump(mode="json") | {"steps": self.rules.steps}

    @property
    def rules(self) -> RolloutSpec:
        """The rollout section this rollout started with (the spec's for a new one)."""
        return RolloutSpec.model_validate(self.state.rules) if self.state and self.state.rules else self.spec.rollout

    # ------------------------------------------------------------------ traffic

    def _plan_for(self, step: int):
        s, rollout = self.state, self.rules
        name = rollout.steps[step]
        if name == "shadow":
            return TrafficPlan(s.champion, {s.champion: 1.0, s.challenger: 0.0}, shadow=s.challenger,
                               shadow_fraction=rollout.shadow_fraction, step="shadow")
        weight = float(name) / 100
        return TrafficPlan(s.champion, {s.champion: round(1 - weight, 6), s.challenger: weight}, step=f"{name:g}%")

    @staticmethod
    def _entry(action: str, reason: str, plan=None, actor: str | None = None) -> dict:
        return {"action": action, "reason": reason, "after": None if plan is None else plan.to_dict()} | (
            {"principal": actor} if actor else {})

    def start(self, challenger: str, actor: str | None = None, rules: dict | None = None,
              incident: str | None = None) -> dict:
        """Begin rolling `challenger` out under `rules` (a rollout section; default the spec's). It is served already:
        `command` deploys it at weight 0 first. `incident`: the incident it answers; the rollout records its outcome
        there."""
        self._load()
        champion = control.client(self.spec).aliases()["champion"]
        _, challenger = Registry(self.spec).resolve(challenger)
        if champion is None or champion == challenger:
            raise UserError(f"a canary needs a champion and another version (champion {champion}, challenger {challenger})")
        if self.state is not None and self.state.status in ROLLOUT_ACTIVE:
            raise UserError(f"a rollout of v{self.state.challenger} is {self.state.status}: promote or roll it back first")
        now, rules = self.clock.now(), RolloutSpec.model_validate(rules) if rules else self.spec.rollout
        self.state = RolloutState(champion=champion, challenger=challenger, step_started=now.isoformat(),
                                  started=now.isoformat(),
                                  log_version=self._version_before(self.spec.serve.inference_log_table,
                                                                   now - rules.interval),
                                  labels_version=self._version_before(self.spec.serve.labels_table, now),
                                  rules=rules.model_dump(mode="json"), incident=incident)
        plan = self._plan_for(0)
        answers = f"; answers incident {incident}" if incident else ""
        audit = [self._entry("canary.start", f"step 1/{len(rules.steps)}{answers}", plan)]
        if actor:
            audit.append(self._entry("canary.start.requested", "manual", actor=actor))
        self._save(plan, audit)
        return self._view()

    # ------------------------------------------------------------------ analysis

    def _version_before(self, table: str, when: datetime) -> int:
        """The table's last version committed before `when` (-1: none, or no table yet)."""
        if not self.lake.exists(table):
            return -1
        try:
            return self.lake.open(table, as_of=when).version() - 1
        except UserError:  # the table is younger than `when`
            return -1

    def _appended(self, table: str, after: int, columns: list[str]) -> pa.Table | None:
        """`columns` of the rows appended to `table` after version `after` (inserts only), or None."""
        appended = appended_since(self.lake, table, after, columns)
        return None if appended is None else appended.drop_columns(["_commit_version"])

    def _records(self, since: datetime) -> tuple[list[dict], list[dict], dict]:
        serve_spec, s = self.spec.serve, self.state
        champion, challenger = [], []
        logged = self._appended(serve_spec.inference_log_table, s.log_version, ANALYSED_LOG_COLUMNS)
        if logged is not None:
            logged = logged.filter(pc.greater_equal(logged.column("at"), since))
            for r in logged.to_pylist():
                if r["pinned"]:  # sent to a version on purpose (the pin header): not canary traffic
                    continue
                if r["model_version"] == s.challenger:
                    challenger.append(r)
                elif r["model_version"] == s.champion and not r["shadow"]:
                    champion.append(r)
        labelled = self._appended(serve_spec.labels_table, s.labels_version, LABEL_COLUMNS)
        labels = {} if labelled is None else {(r["request_id"], r["row"]): r["label"]
                                              for r in dedupe_labels(labelled).to_pylist()}
        return champion, challenger, labels

    def _analyse(self) -> Analysis:
        """The challenger against the champion on their traffic since the rollout began."""
        s, rollout = self.state, self.rules
        began = datetime.fromisoformat(s.started or s.step_started)
        champion, challenger, labels = self._records(began)
        if len(champion) < rollout.min_requests:  # e.g. a rollout that starts at 100%: the traffic before it is the baseline
            champion = self._records(began - rollout.interval)[0]
        return analyze(champion, challenger, labels, rollout.checks, rollout.min_requests, s.incident,
                       self._estimated(began))

    def _estimated(self, began: datetime) -> list[Compared]:
        """Both versions' quality estimated before labels (each from its own calibrator) in the drift monitor's latest
        window, when one was checked since the rollout began against this champion; none without a monitor."""
        s = self.state
        latest = read_reports(self.lake, limit=1)
        if not latest or latest[0].at < began or latest[0].champion != s.champion:
            return []
        ours, theirs = latest[0].estimated, latest[0].versions.get(s.challenger, {}).get("estimated", {})
        return [Compared(metric, ours[metric]["value"], theirs[metric]["value"], source="estimated")
                for metric in ESTIMATED_EVIDENCE if metric in ours and metric in theirs
                and np.isfinite([ours[metric]["value"], theirs[metric]["value"]]).all()]

    def tick(self, force: bool = False) -> dict | None:
        """Look at the rollout and act: count a failure, move on when the step's interval is over (at once with
        `force`, which also lets a plain threshold's failure count), or wait."""
        self._load()
        s = self.state
        if s is not None and s.status in ROLLOUT_ENDED:
            self._record_outcome()  # e.g. stopped by hand, or a decision whose incident write failed
        if s is None or s.status != RolloutStatus.RUNNING:
            return self._view()
        step_over = force or self.clock.now() - datetime.fromisoformat(s.step_started) >= self.rules.interval
        analysis = self._analyse()
        action = analysis.action(step_over)
        if action == "fail" and self._new_evidence(analysis):
            return self._fail(analysis, step_over)
        if action == "advance":
            self._remember(analysis, "advance")
            self._advance(analysis)
        elif step_over:  # nothing decided: the latest look, saved once the interval is over (as often as before)
            self._remember(analysis, "look")
            self._save()
        return self._view()

    def _remember(self, analysis: Analysis, decision: str) -> None:
        """Add the look to the history with what came of it: 'advance', 'failure' (counted) or 'look' (nothing). A
        'look' replaces the look before it, so the history holds every decision and the latest look."""
        s = self.state
        if s.history and s.history[-1].get("decision") == "look":
            s.history.pop()
        s.history.append({"step": s.step, "at": self.clock.now().isoformat(), "decision": decision,
                          "failures": s.failures, **analysis.to_dict()})

    def _new_evidence(self, analysis: Analysis) -> bool:
        """Whether the look's failed checks differ from the last counted failure's: a look at the same counts (no new
        traffic or labels since) is the same evidence, counted once."""
        last = next((h for h in reversed(self.state.history) if h.get("decision") == "failure"), None)
        return last is None or _evidence(analysis.to_dict()["checks"]) != _evidence(last["checks"])

    def _fail(self, analysis: Analysis, step_over: bool) -> dict | None:
        """A counted failure: the audit says which checks and on what evidence; at `failure_limit` it rolls back, else
        the step's interval starts again."""
        s, limit = self.state, self.rules.failure_limit
        s.failures += 1
        self._remember(analysis, "failure")
        reasons = "; ".join(c.reason for c in analysis.failing(step_over))
        failed = self._entry("canary.check_failed", f"step {s.step + 1}, {analysis.challenger_requests} challenger "
                                                    f"requests: {reasons} (failure {s.failures}/{limit})")
        if s.failures >= limit:
            return self._roll_back(f"{s.failures} failed analyses; last: {reasons}", [failed])
        s.step_started = self.clock.now().isoformat()
        self._save(audit=[failed])
        return self._view()

    def _advance(self, analysis: Analysis) -> None:
        """The step passed; the audit names the checks past their threshold that other evidence outranked, and those
        still undecided (watched on, as their counts keep cumulating)."""
        s, steps = self.state, self.rules.steps
        said = "".join(f"; {note}" for note in analysis.notes) + (
            f"; undecided: {', '.join(analysis.undecided)}" if analysis.undecided else "")
        if s.step + 1 >= len(steps):
            self._promote(f"every step passed{said}")
            return
        s.step += 1
        s.step_started = self.clock.now().isoformat()
        plan = self._plan_for(s.step)
        self._save(plan, [self._entry("canary.step", f"step {s.step + 1}/{len(steps)}: {steps[s.step]}{said}", plan)])

    # ------------------------------------------------------------------ decisions

    def _promote(self, reason: str, requested_by: str | None = None) -> dict:
        s = self.state
        s.status, s.reason = RolloutStatus.PROMOTED, reason
        plan = TrafficPlan(s.challenger, {s.challenger: 1.0}, step="promoted")
        audit = [self._entry("canary.promote", reason, plan)]
        if requested_by:
            audit.append(self._entry("canary.promote.requested", reason, actor=requested_by))
        # the champion alias moves; the old champion becomes previous
        self._save(plan, audit, promote=s.challenger)
        self._record_outcome(requested_by)
        return self._view()

    def _roll_back(self, reason: str, audit: list[dict] = (), requested_by: str | None = None) -> dict:
        s = self.state
        s.status, s.reason = RolloutStatus.ROLLED_BACK, reason
        plan = TrafficPlan(s.champion, {s.champion: 1.0, s.challenger: 0.0}, step="rolled back")
        audit = [*audit, self._entry("canary.rollback", reason, plan)]
        if requested_by:
            audit.append(self._entry("canary.rollback.requested", reason, actor=requested_by))
        self._save(plan, audit, tag=(s.challenger, reason))
        self._record_outcome(requested_by)
        return self._view()

    def _record_outcome(self, requested_by: str | None = None) -> None:
        """Record the ended rollout's outcome on the incident it answers (if any), once per process; a failed write
        is logged and retried by the next tick (the decision itself is committed already)."""
        s = self.state
        if not s.incident or (s.incident, s.status) in self.recorded:
            return
        try:
            record_rollout_outcome(self.incidents, s, requested_by or self.actor, self._audit)
        except Exception:  # noqa: BLE001 - the lake may be down: the next tick retries
            log.exception("recording the outcome of the rollout of v%s on incident %s failed", s.challenger, s.incident)
            return
        self.recorded.add((s.incident, s.status))

    def _audit(self, entry: dict) -> None:
        AuditLog(self.spec.platform).append(target=self.spec.name, **entry)

    def promote(self, reason: str, actor: str | None = None) -> dict:
        self._active()
        return self._promote(reason, actor)

    def rollback(self, reason: str, actor: str | None = None) -> dict:
        self._active()
        return self._roll_back(reason, requested_by=actor)

    def pause(self, actor: str) -> dict:
        s = self._active()
        s.status = RolloutStatus.PAUSED
        self._save(audit=[self._entry("canary.pause", "manual", actor=actor)])
        return self._view()

    def resume(self, actor: str) -> dict:
        s = self._active()
        s.status, s.step_started = RolloutStatus.RUNNING, self.clock.now().isoformat()
        self._save(audit=[self._entry("canary.resume", "manual", actor=actor)])
        return self._view()

    def _active(self) -> RolloutState:
        self._load()
        if self.state is None or self.state.status not in ROLLOUT_ACTIVE:
            raise UserError("no rollout is in progress (start one with `mlray canary start`)")
        return self.state


def _evidence(checks: list[dict]) -> list[tuple]:
    """What the failed checks of a look rest on: their names, values and details (counts and bounds)."""
    return [(c["name"], f"{c['value']:.9g}", c["detail"]) for c in checks if c["status"] == "fail"]


@ray.remote(num_cpus=0, max_restarts=-1)
class RolloutController(TimedShell):
    """The actor: `Rollout` plus a timer that looks at the rollout every tick (a quarter of the interval, at most 5 s).
    It keeps no state of its own, so after a crash it restarts (on any node) and goes on from what the control plane
    holds."""

    def __init__(self, spec: ProjectSpec):
        super().__init__(Rollout(spec))

    def period(self) -> float:
        return max(0.5, min(self.target.rules.interval.total_seconds() / 4, 5.0))


def controller_name(project: str) -> str:
    return f"{project}-{ACTOR}"


def controller(spec: ProjectSpec):
    """The project's controller actor (started, detached, when it is not running)."""
    return detached(RolloutController, controller_name(spec.name), spec)


class RolloutClient:
    """The project's rollout controller, called and waited for (what the CLI, the jobs and the retraining job use);
    a `UserError` comes back as itself."""

    def __init__(self, spec: ProjectSpec):
        self.spec = spec

    def start(self, challenger: str, actor: str | None = None, incident: str | None = None) -> dict:
        """Serve `challenger` (at weight 0, from this process) and start its rollout under this spec's rollout
        section; `incident`: the incident it answers (the rollout records its outcome there)."""
        deploy.deploy(self.spec, versions=[challenger], actor=actor, hand_over=False)
        return self._call(Rollout.start, challenger, actor, self.spec.rollout.model_dump(mode="json"), incident)

    def status(self) -> dict | None:
        return self._call(Rollout.status)

    def tick(self, force: bool = False) -> dict | None:
        return self._call(Rollout.tick, force)

    def promote(self, reason: str, actor: str | None = None) -> dict:
        return self._call(Rollout.promote, reason, actor)

    def rollback(self, reason: str, actor: str | None = None) -> dict:
        return self._call(Rollout.rollback, reason, actor)

    def pause(self, actor: str) -> dict:
        return self._call(Rollout.pause, actor)

    def resume(self, actor: str) -> dict:
        return self._call(Rollout.resume, actor)

    def wait_for_verdict(self, version: str, timeout_s: float, poll_s: float = 2.0) -> dict | None:
        """Follow the rollout of `version` until it ends (its state returned) or `timeout_s` passes (None): what
        `jobs/canary.py --wait` does. The retraining job does not wait: the rollout records its own outcome."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.status()
            if state and state["challenger"] == version and state["status"] in ROLLOUT_ENDED:
                return state
            time.sleep(poll_s)
        return None

    def _call(self, method, *args):
        return answer(controller(self.spec).call.remote(method.__name__, *args))


def client(spec: ProjectSpec) -> RolloutClient:
    return RolloutClient(spec)
