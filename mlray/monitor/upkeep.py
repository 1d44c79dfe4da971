"""Keeping the inference log's and labels' tables tidy: their small files compacted and rows past the retention
dropped, every `monitor.compact_every`."""

from __future__ import annotations

import logging

from mlray.control.clock import Clock
from mlray.control.state import MonitorCheckpoint
from mlray.lake import Lake
from mlray.lake.upkeep import compact_and_expire
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)


class LogUpkeep:
    def __init__(self, spec: ProjectSpec, lake: Lake, clock: Clock):
        self.spec, self.lake, self.clock = spec, lake, clock

    def run(self, checkpoint: MonitorCheckpoint) -> bool:
        """Compact and expire when `compact_every` has passed since the checkpoint's last upkeep; True when it ran
        (the checkpoint changed)."""
        rules = self.spec.monitor
        if self.clock.now() - checkpoint.last_upkeep < rules.compact_every:
            return False
        for table in (self.spec.serve.inference_log_table, self.spec.serve.labels_table):
            if self.lake.exists(table):
                log.info("upkeep of %s: %s", table, compact_and_expire(self.lake, table, rules.log_retention))
        checkpoint.last_upkeep = self.clock.now()
        return True
