"""The rollout controller: a long-lived Ray actor that walks a challenger through the spec's steps.

At every step it sets the traffic (shadow, then growing weights), waits `rollout.interval`,
and analyses the challenger against the champion on the inference log and feedback labels of
that interval. A passing step moves on; a failing one counts, and `failure_limit` failures roll
back by themselves (challenger weight 0, the version tagged with the reason). Passing every step
promotes: the `champion` alias moves, the old champion becomes `previous`. Every change goes to
the audit log. Its state is a JSON file in the state folder, so a restarted controller goes on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import ray

from mlray.audit import AuditLog
from mlray.errors import UserError
from mlray.rollout.analysis import analyze
from mlray.serve.traffic import read_json, write_json
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)
NAMESPACE = "mlray"
ACTOR = "rollout-controller"
ROLLBACK_TAG = "mlray.rolled_back"


@dataclass
class RolloutState:
    champion: str
    challenger: str
    status: str = "running"  # running | paused | promoted | rolled_back
    step: int = 0
    step_started: str = ""
    started: str = ""  # when the rollout began: the champion's baseline once it gets no live traffic (100% steps)
    failures: int = 0
    reason: str = ""
    # the last versions of the inference log and labels before the rollout's window: reads start after them
    log_version: int = -1
    labels_version: int = -1
    history: list[dict] = field(default_factory=list)  # one entry per analysis


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Rollout:
    """The rollout logic, in plain Python (the actor below runs it on a timer)."""

    def __init__(self, spec: ProjectSpec, actor: str = f"controller:{ACTOR}"):
        from mlray import dataplane

        self.spec, self.actor = spec, actor
        self.path = Path(spec.platform.state_dir) / "serve" / "rollout.json"
        self.audit = AuditLog(spec.platform.state_dir)
        self.lake = dataplane.lake_of(spec)
        saved = read_json(self.path)
        self.state = RolloutState(**saved) if saved is not None else None

    # ------------------------------------------------------------------ state

    def _save(self) -> None:
        write_json(self.path, asdict(self.state))
        self._publish()

    def _publish(self) -> None:
        """The rollout's step, challenger weight and failures as Prometheus gauges."""
        from mlray.metrics import rollout

        s, gauges = self.state, rollout()
        tags = {"model": self.spec.name, "challenger": s.challenger}
        active = s.status in ("running", "paused")
        step = self.spec.rollout.steps[s.step] if active else None
        gauges["step"].set(s.step + 1 if active else 0, tags=tags)
        gauges["weight"].set(float(step) / 100 if active and step != "shadow" else
                             (1.0 if s.status == "promoted" else 0.0), tags=tags)
        gauges["failures"].set(s.failures, tags=tags)

    def status(self) -> dict | None:
        return None if self.state is None else asdict(self.state) | {"steps": self.spec.rollout.steps}

    # ------------------------------------------------------------------ traffic

    def _plan_for(self, step: int):
        from mlray.serve.routing import TrafficPlan

        s, rollout = self.state, self.spec.rollout
        name = rollout.steps[step]
        if name == "shadow":
            return TrafficPlan(s.champion, {s.champion: 1.0, s.challenger: 0.0}, shadow=s.challenger,
                               shadow_fraction=rollout.shadow_fraction, step="shadow")
        weight = float(name) / 100
        return TrafficPlan(s.champion, {s.champion: round(1 - weight, 6), s.challenger: weight}, step=f"{name:g}%")

    def _set(self, plan, action: str, reason: str) -> None:
        from mlray.serve.deploy import current_plan, set_traffic

        before = current_plan(self.spec)
        set_traffic(self.spec, plan)
        self.audit.append(action, f"{self.spec.name} v{self.state.challenger}", reason, before, plan.to_dict(), self.actor)

    def start(self, challenger: str, actor: str | None = None) -> dict:
        from mlray.registry.models import Registry
        from mlray.serve.deploy import deploy

        registry = Registry(self.spec)
        champion = registry.version_of("champion")
        _, challenger = registry.resolve(challenger)
        if champion is None or champion == challenger:
            raise UserError(f"a canary needs a champion and another version (champion {champion}, challenger {challenger})")
        if self.state is not None and self.state.status in ("running", "paused"):
            raise UserError(f"a rollout of v{self.state.challenger} is {self.state.status}: promote or roll it back first")
        deploy(self.spec, versions=[challenger])  # serves the challenger at weight 0 (a no-op when it already runs)
        now = _now()
        self.state = RolloutState(champion, challenger, step_started=now.isoformat(), started=now.isoformat(),
                                  log_version=self._version_before(self.spec.serve.inference_log_table,
                                                                   now - self.spec.rollout.interval),
                                  labels_version=self._version_before(self.spec.serve.labels_table, now))
        self._set(self._plan_for(0), "canary.start", f"step 1/{len(self.spec.rollout.steps)}")
        if actor:
            self.audit.append("canary.start.requested", f"{self.spec.name} v{challenger}", "manual", actor=actor)
        self._save()
        return self.status()

    # ------------------------------------------------------------------ analysis

    def _version_before(self, table: str, when: datetime) -> int:
        """The table's last version committed before `when` (-1: none, or no table yet)."""
        if not self.lake.exists(table):
            return -1
        try:
            return self.lake.open(table, as_of=when).version() - 1
        except UserError:  # the table is younger than `when`
            return -1

    def _appended(self, table: str, after: int) -> pa.Table | None:
        """Rows appended to `table` after version `after` (the tables are append-only), or None."""
        if not self.lake.exists(table):
            return None
        return self.lake.read(table) if after < 0 else self.lake.changes_since(table, after)

    def _records(self, since: datetime) -> tuple[list[dict], list[dict], dict]:
        serve_spec, s = self.spec.serve, self.state
        champion, challenger = [], []
        logged = self._appended(serve_spec.inference_log_table, s.log_version)
        if logged is not None:
            logged = logged.filter(pc.greater_equal(logged.column("at"), since))
            for r in logged.to_pylist():
                if r["model_version"] == s.challenger:
                    challenger.append(r)
                elif r["model_version"] == s.champion and not r["shadow"]:
                    champion.append(r)
        labelled = self._appended(serve_spec.labels_table, s.labels_version)
        labels = {} if labelled is None else {(r["request_id"], r["row"]): r["label"] for r in labelled.to_pylist()}
        return champion, challenger, labels

    def tick(self, force: bool = False) -> dict | None:
        """Analyse the current step once its interval is over (or at once with `force`); act on the verdict."""
        s, rollout = self.state, self.spec.rollout
        if s is None or s.status != "running":
            return self.status()
        started = datetime.fromisoformat(s.step_started)
        if not force and _now() - started < rollout.interval:
            return self.status()
        champion, challenger, labels = self._records(started)
        if len(champion) < rollout.min_requests:  # e.g. a 100% step: the baseline is the champion's recent traffic
            champion = self._records(datetime.fromisoformat(s.started or s.step_started) - rollout.interval)[0]
        analysis = analyze(champion, challenger, labels, rollout.checks, rollout.min_requests)
        s.history.append({"step": s.step, "at": _now().isoformat(), **analysis.to_dict()})
        if analysis.verdict == "fail":
            s.failures += 1
            reasons = "; ".join(f"{c.name} {c.value:.4g} > {c.threshold:g}" for c in analysis.failed)
            self.audit.append("canary.check_failed", f"{self.spec.name} v{s.challenger}",
                              f"step {s.step + 1}: {reasons} ({s.failures}/{rollout.failure_limit})", actor=self.actor)
            if s.failures >= rollout.failure_limit:
                self.rollback(f"{s.failures} failed analyses; last: {reasons}")
                return self.status()
            s.step_started = _now().isoformat()  # the step runs again on fresh traffic
        elif analysis.verdict == "pass":
            self._advance()
        self._save()
        return self.status()

    def _advance(self) -> None:
        s, steps = self.state, self.spec.rollout.steps
        if s.step + 1 >= len(steps):
            self.promote("every step passed")
            return
        s.step += 1
        s.step_started = _now().isoformat()
        self._set(self._plan_for(s.step), "canary.step", f"step {s.step + 1}/{len(steps)}: {steps[s.step]}")

    # ------------------------------------------------------------------ decisions

    def promote(self, reason: str, actor: str | None = None) -> dict:
        from mlray.registry.models import Registry
        from mlray.serve.routing import TrafficPlan

        s = self._active()
        Registry(self.spec).promote(s.challenger)  # champion alias moves; the old champion becomes previous
        s.status, s.reason = "promoted", reason
        self._set(TrafficPlan(s.challenger, {s.challenger: 1.0}, step="promoted"), "canary.promote", reason)
        if actor:
            self.audit.append("canary.promote.requested", f"{self.spec.name} v{s.challenger}", reason, actor=actor)
        self._save()
        return self.status()

    def rollback(self, reason: str, actor: str | None = None) -> dict:
        from mlray.registry.models import Registry
        from mlray.serve.routing import TrafficPlan

        s = self._active()
        self._set(TrafficPlan(s.champion, {s.champion: 1.0, s.challenger: 0.0}, step="rolled back"),
                  "canary.rollback", reason)
        registry = Registry(self.spec)
        registry.client.set_model_version_tag(registry.model_name, s.challenger, ROLLBACK_TAG, reason)
        s.status, s.reason = "rolled_back", reason
        if actor:
            self.audit.append("canary.rollback.requested", f"{self.spec.name} v{s.challenger}", reason, actor=actor)
        self._save()
        return self.status()

    def pause(self, actor: str) -> dict:
        s = self._active()
        s.status = "paused"
        self.audit.append("canary.pause", f"{self.spec.name} v{s.challenger}", "manual", actor=actor)
        self._save()
        return self.status()

    def resume(self, actor: str) -> dict:
        s = self._active()
        s.status, s.step_started = "running", _now().isoformat()
        self.audit.append("canary.resume", f"{self.spec.name} v{s.challenger}", "manual", actor=actor)
        self._save()
        return self.status()

    def _active(self) -> RolloutState:
        if self.state is None or self.state.status not in ("running", "paused"):
            raise UserError("no rollout is in progress (start one with `mlray canary start`)")
        return self.state


@ray.remote(num_cpus=0, max_concurrency=4)
class RolloutController:
    """The actor: `Rollout` plus a timer that analyses each step when its interval is over."""

    def __init__(self, spec: ProjectSpec):
        self.rollout = Rollout(spec)
        self.lock: asyncio.Lock | None = None
        self.timer: asyncio.Task | None = None

    @property
    def period(self) -> float:
        return max(0.5, min(self.rollout.spec.rollout.interval.total_seconds() / 4, 5.0))

    def configure(self, spec: ProjectSpec) -> None:
        """Take the spec a new rollout starts with (a rollout in progress keeps the one it started with)."""
        state = self.rollout.state
        if state is None or state.status not in ("running", "paused"):
            self.rollout.spec = spec

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            try:
                await self.call("tick")
            except Exception:
                log.exception("rollout tick failed")

    async def call(self, method: str, *args, **kwargs):
        """Run one `Rollout` method, one at a time (the timer and commands never interleave)."""
        if self.timer is None:  # started on the first call, inside the actor's event loop
            self.lock = asyncio.Lock()
            self.timer = asyncio.create_task(self._loop())
        async with self.lock:
            return await asyncio.to_thread(getattr(self.rollout, method), *args, **kwargs)


def controller(spec: ProjectSpec):
    """The project's controller actor (started, detached, when it is not running)."""
    actor = RolloutController.options(name=f"{spec.name}-{ACTOR}", namespace=NAMESPACE, lifetime="detached",
                                      get_if_exists=True).remote(spec)
    ray.get(actor.call.remote("status"))  # starts its timer
    return actor


def command(spec: ProjectSpec, method: str, *args, **kwargs):
    """Run a controller method through the actor (what the CLI does); a UserError comes back as itself.
    `start` takes this spec's rollout section."""
    actor = controller(spec)
    if method == "start":
        ray.get(actor.configure.remote(spec))
    return ray.get(actor.call.remote(method, *args, **kwargs))
