"""The monitor as a long-lived Ray actor: one per project (`<name>-monitor`), detached, restarting by itself.

It keeps nothing of its own: what it knows is the `monitor_state` document under the lake root, so after a crash it
restarts (on any node) and resumes from its checkpoint. The caller passes everything it needs, the spec and the
Jobs API address included.
"""

from __future__ import annotations

import asyncio
import logging

import ray

from mlray.control.retry import backoff
from mlray.lake.state import StateConflict
from mlray.monitor.watch import Monitor
from mlray.runtime import NAMESPACE
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)
BACKOFF_CAP_S = 60.0


def actor_name(project: str) -> str:
    return f"{project}-monitor"


@ray.remote(num_cpus=0, max_restarts=-1)  # long-lived: never waits for a free CPU to start
class DriftMonitor:
    def __init__(self, spec: ProjectSpec, jobs_address: str | None):
        self.monitor = Monitor(spec, jobs_address)
        self.period = spec.monitor.poll_interval.total_seconds()
        self.lock = asyncio.Lock()  # the timer and commands never interleave
        self.timer = asyncio.get_event_loop().create_task(self._loop())

    async def _loop(self) -> None:
        """A step every period; after failures in a row (the lake or MLflow down) the wait doubles, up to
        BACKOFF_CAP_S, so an outage is not met with a storm of calls. Windows wait: none is skipped."""
        failures = 0
        while True:
            try:
                await self.call("step")
                failures = 0
            except StateConflict:  # another monitor wrote the state: the next step reads it afresh
                pass
            except Exception as exc:  # noqa: BLE001 - the timer must outlive a bad step (e.g. a registry that is down)
                failures += 1
                if failures == 1:
                    log.exception("monitor step failed")
                else:
                    log.warning("monitor step failed again (%d in a row): %s", failures, f"{type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(backoff(failures, first=self.period, cap=max(self.period, BACKOFF_CAP_S)))

    async def call(self, method: str, *args, **kwargs):
        """Run one `Monitor` method, one at a time."""
        async with self.lock:
            return await asyncio.to_thread(getattr(self.monitor, method), *args, **kwargs)


def start(spec: ProjectSpec):
    """The project's monitor: found if it runs, else started with this spec; returned once it has its checkpoint
    (a new one starts at the end of the inference log), so traffic served from now on is watched."""
    from mlray.errors import UserError
    from mlray.monitor.jobs import jobs_address

    try:
        address = jobs_address()
    except UserError:  # no Jobs API here: the monitor asks again when it has a job to submit, and says so then
        address = None
    handle = DriftMonitor.options(name=actor_name(spec.name), namespace=NAMESPACE, lifetime="detached",
                                  get_if_exists=True).remote(spec, address)
    ray.get(handle.call.remote("status"))
    return handle


def find(spec: ProjectSpec):
    """The running monitor, or None."""
    try:
        return ray.get_actor(actor_name(spec.name), namespace=NAMESPACE)
    except ValueError:
        return None


def stop(spec: ProjectSpec) -> bool:
    """Stop the monitor for good (its state stays: a new start resumes from it); False when none ran."""
    found = find(spec)
    if found is None:
        return False
    ray.kill(found, no_restart=True)
    return True


def status(spec: ProjectSpec) -> dict | None:
    """The running monitor's status (windows, champion, live quality, incidents), or None when none runs."""
    found = find(spec)
    return None if found is None else ray.get(found.call.remote("status"))
