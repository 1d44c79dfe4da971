"""Helpers every kind of test shares (tests/ is on the path through its conftest)."""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

# a model good enough for its scores to tell fraud apart in a minute of training (the monitor tests need that)
TRAINED = """
train:
  num_workers: 1
  epochs: 4
  batch_size: 256
  cpus_per_worker: 0.5
  early_stopping: null
"""


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this test run: the kernel may give a port it just freed to the
    next bind, so two calls could name the same port for two components of one `ray start`, which Ray refuses."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def ray_start(folder: Path, environ: dict, *args: str) -> None:
    """`ray start` of one node of a second Ray on this machine: its own temp dir and free ports for what would
    otherwise take Ray's defaults, in a session of its own (its raylet's process group is the node's alone)."""
    ports = ["--node-manager-port", "--object-manager-port", "--metrics-export-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port"]
    command = [str(Path(sys.executable).with_name("ray")), "start", "--temp-dir", str(folder), "--disable-usage-stats",
               *args, *[x for port in ports for x in (port, str(free_port()))]]
    done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120, start_new_session=True)
    assert done.returncode == 0, done.stdout + done.stderr


def kill_processes_naming(*marks: str) -> None:
    """Kill every process (but this one) whose command line names one of `marks`: what a second Ray left."""
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if process.pid != os.getpid() and any(mark in command for mark in marks):
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass


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
