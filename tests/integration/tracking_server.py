"""A real MLflow tracking server on 127.0.0.1 for the tests that need one apart from the run's SQLite store."""

import os
import signal
import subprocess
import sys

import requests
from helpers import wait_until


def mlflow_server(folder, port: int, log) -> subprocess.Popen:
    """An MLflow tracking server on 127.0.0.1:`port` (SQLite store; artifacts written and read by the clients
    themselves, not through the server), returned once it answers."""
    folder.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
         "--default-artifact-root", (folder / "artifacts").as_uri(), "--no-serve-artifacts", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def answers() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    # 5 s on a quiet machine; a restart under load took 95 s once (CI with unit tests running beside it)
    assert wait_until(answers, timeout=240, every=0.5), "the MLflow server did not start"
    return server


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
