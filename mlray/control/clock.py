"""The loops' one clock: timezone-aware UTC. Loops take a `Clock` so unit tests drive time by hand."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


SYSTEM_CLOCK = SystemClock()


def utc_now() -> datetime:
    return SYSTEM_CLOCK.now()
