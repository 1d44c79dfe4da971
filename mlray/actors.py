"""The one shell of mlray's timed actors and the one factory of its detached, named actors.

A timed actor (the rollout controller, the drift monitor) is a plain object that knows its loop (`Rollout`,
`Monitor`) wrapped in `TimedShell`: a timer calls the object's tick every period, commands run the object's methods,
and the two never interleave. After failures in a row (the lake or MLflow down) the wait doubles up to a cap, so an
outage is not met with a storm of calls; a `StateConflict` (someone else changed the state meanwhile) is no failure:
the next tick reads the state afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError

from mlray.control.retry import backoff
from mlray.errors import UserError
from mlray.lake.state import StateConflict
from mlray.runtime import NAMESPACE

log = logging.getLogger(__name__)


def answer(ref) -> Any:
    """The actor call's result; a `UserError` the actor raised comes back as itself (its one line), not wrapped in
    the actor's traceback."""
    try:
        return ray.get(ref)
    except UserError as exc:
        raise (getattr(exc, "cause", None) or exc) from None


def answer_retried(call: Callable[[], Any], name: str, attempts: int = 3) -> Any:
    """`answer(call())`, called again (a new call, so a new handle if `call` looks the actor up) when the actor died
    or was restarting under it; `name` says whose call it was in the log."""
    for attempt in range(attempts):
        try:
            return answer(call())
        except (ActorDiedError, ActorUnavailableError):
            if attempt == attempts - 1:
                raise
            log.warning("%s was unavailable; calling again", name)
            time.sleep(1.0 + attempt)


def restarted() -> bool:
    """Whether this process is an actor Ray restarted (so it was handed its creation arguments again); False outside
    an actor."""
    if not ray.is_initialized():
        return False
    try:
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # noqa: BLE001 - not an actor (a driver or a task)
        return False


def detached(actor_class, name: str, *args) -> Any:
    """The named actor in mlray's namespace: found if it runs, else started, detached (it outlives its caller and,
    declared with `max_restarts=-1`, restarts by itself)."""
    return actor_class.options(name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote(*args)


class TimedShell:
    """`target` run by a timer (`tick` every `period()` seconds) and by commands (`call`), one at a time."""

    tick = "tick"  # the target's method the timer calls

    def __init__(self, target: Any):
        self.target = target
        self.lock = asyncio.Lock()
        self.timer = asyncio.get_event_loop().create_task(self._loop())

    def period(self) -> float:
        raise NotImplementedError

    def backoff_cap(self) -> float:
        """The longest wait between ticks after failures in a row."""
        return self.period()

    async def _loop(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(backoff(failures, first=self.period(), cap=max(self.period(), self.backoff_cap())))
            try:
                await self.call(self.tick)
                failures = 0
            except StateConflict as exc:
                log.info("%s: the state changed during a tick: %s", type(self.target).__name__, exc)
            except Exception as exc:  # noqa: BLE001 - the timer must outlive a bad tick
                failures += 1
                if failures == 1:
                    log.exception("%s tick failed", type(self.target).__name__)
                else:
                    log.warning("%s tick failed again (%d in a row): %s", type(self.target).__name__, failures,
                                f"{type(exc).__name__}: {exc}"[:200])

    def refresh(self) -> None:
        """Run before every tick and command, in its thread, under the lock (e.g. to move to a new spec revision)."""

    async def call(self, method: str, *args, **kwargs):
        """Run one method of the target in a thread, never alongside another."""
        async with self.lock:
            return await asyncio.to_thread(self._run, method, args, kwargs)

    def _run(self, method: str, args: tuple, kwargs: dict):
        self.refresh()  # first: it may replace the target
        return getattr(self.target, method)(*args, **kwargs)
