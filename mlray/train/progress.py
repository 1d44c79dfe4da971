"""Progress of a training run as the driver sees it, for the CLI's bars.

`TorchTrainer.fit()` blocks the driver, and rank 0 already logs every finished epoch to MLflow,
so a background thread reads that back: no extra channel between workers and driver.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (done, total)


class EpochWatcher:
    """While the block runs, call `progress(epochs finished, total)` whenever the count changes."""

    def __init__(self, registry, run_id: str, total: int, progress: Progress | None, interval_s: float = 1.0):
        self.registry, self.run_id, self.total, self.progress = registry, run_id, total, progress
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen = -1

    def _poll(self) -> None:
        try:
            done = len({m.step for m in self.registry.client.get_metric_history(self.run_id, "val_loss")})
        except Exception as exc:  # progress is best effort; training must not fail because a read did
            log.debug("could not read progress of run %s: %s", self.run_id, exc)
            return
        if done != self._seen:
            self._seen = done
            self.progress(min(done, self.total), self.total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._poll()

    def __enter__(self) -> "EpochWatcher":
        if self.progress is not None:
            self._poll()
            self._thread = threading.Thread(target=self._run, name="mlray-epoch-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            if exc[0] is None:
                self._poll()
