"""Helpers every kind of test shares (tests/ is on the path through its conftest)."""

import socket
import threading
import time

# a model good enough for its scores to tell fraud apart in a minute of training (the monitor tests need that)
TRAINED = """
train:
  num_workers: 1
  epochs: 4
  batch_size: 256
  cpus_per_worker: 0.5
  early_stopping: null
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout=20.0, every=0.5):
    """Poll `check()` until it returns something truthy (returned) or `timeout` passes (None)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)  # the poll interval: the one sleep every wait on a condition shares
    return None


class Background:
    """`run_once()` again and again on a thread while the `with` block lasts."""

    def __init__(self, pause: float = 0.0):
        self.pause, self.stop = pause, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def run_once(self) -> None:
        raise NotImplementedError

    def _run(self):
        while not self.stop.is_set():
            self.run_once()
            self.stop.wait(self.pause)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
