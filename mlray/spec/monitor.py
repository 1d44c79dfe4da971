"""`monitor`: drift and live-quality monitoring."""

from __future__ import annotations

from mlray.spec.base import Section


class MonitorSpec(Section):
    """Filled by the monitoring issue."""
