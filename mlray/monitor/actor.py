"""The monitor as a long-lived Ray actor: one per project (`<name>-monitor`), detached, restarting by itself.

It keeps nothing of its own: what it knows is the `monitor_state` document under the lake root, so after a crash it
restarts (on any node) and resumes from its checkpoint. The caller passes everything it needs, the spec and the
Jobs API address included.
"""

from __future__ import annotations

import asyncio
import logging

import ray

from mlray.actors import TimedShell, answer_retried, detached, restarted
from mlray.lake import Lake
from mlray.lake.specs import LiveSpec
from mlray.monitor.serving import PushedServing, ServingTable
from mlray.monitor.watch import Monitor
from mlray.runtime import NAMESPACE
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)
BACKOFF_CAP_S = 60.0


def actor_name(project: str) -> str:
    return f"{project}-monitor"


@ray.remote(num_cpus=0, max_restarts=-1)  # long-lived: never waits for a free CPU to start
class DriftMonitor(TimedShell):
    """`Monitor` stepped every poll interval; after failures in a row (the lake or MLflow down) the wait doubles up to
    BACKOFF_CAP_S. Windows wait: none is skipped."""

    tick = "step"

    def __init__(self, spec: ProjectSpec, jobs_address: str | None):
        self.jobs_address, self.live = jobs_address, LiveSpec(spec, restarted())  # the revision the control plane holds
        # a new champion or rollout is heard when it is committed, not at the next read of the table
        self.serving = PushedServing(spec, ServingTable(spec, Lake.from_platform(spec.platform)))
        super().__init__(self._monitor())
        self.following = asyncio.get_event_loop().create_task(self.serving.follow())

    def _monitor(self) -> Monitor:
        """The loop on the spec in hand; a new one resumes from the checkpoint, as after a restart."""
        spec = self.live.spec
        self.poll_s = spec.monitor.poll_interval.total_seconds()
        return Monitor(spec, self.jobs_address, serving=self.serving, spec_revision=self.live.digest)

    def _moved(self) -> None:
        """The spec in hand changed: the serving view reads with its credentials, and a new loop runs on it."""
        self.serving.use(self.live.spec)
        self.target = self._monitor()

    def refresh(self) -> None:
        if self.live.follow(self.serving.spec_revision()):
            self._moved()

    async def hand_over(self, spec: ProjectSpec) -> str:
        """Run on `spec` (`monitor start` with the monitor running); the digest of the spec it runs on."""
        async with self.lock:
            if self.live.offer(spec):
                self._moved()
        return self.live.digest

    def period(self) -> float:
        return self.poll_s

    def backoff_cap(self) -> float:
        return BACKOFF_CAP_S


def start(spec: ProjectSpec):
    """The project's monitor: started with this spec, or found running and handed it; returned once it has its
    checkpoint (a new one starts at the end of the inference log), so traffic served from now on is watched. It
    follows the spec revision the control plane holds: hand this spec over there first (`mlray.monitoring.start`)."""
    # No address: the monitor submits through the head node (`jobs.HeadJobs`), as the address this driver sees (often
    # the head's 127.0.0.1) may not answer on the node Ray places or restarts the monitor on.
    handle = detached(DriftMonitor, actor_name(spec.name), spec, None)
    ray.get(handle.hand_over.remote(spec))  # one that ran already takes this spec
    ray.get(handle.call.remote(Monitor.status.__name__))
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
    return None if found is None else answer_retried(lambda: found.call.remote(Monitor.status.__name__),
                                                     f"the monitor of {spec.name}", attempts=5)  # e.g. restarting
