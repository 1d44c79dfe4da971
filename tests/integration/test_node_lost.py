"""A node lost under load. A second Ray cluster of two nodes on this machine, both on loopback, each with its own temp
dir and ports: `ray start --head` on 127.0.0.1 and `ray start --address` on 127.0.0.2. The project is deployed from a
driver on the worker node, so the control plane, the monitor and an ingress replica run there; the worker node is then
killed (its raylet's process group and every process the raylet started) while requests flow. The drivers run as
their own processes (`node_lost_driver.py`): this one is joined to the suite's Ray."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from helpers import free_port, kill_processes_naming, ray_start
from serving import as_json_rows, raw_rows, watched_project

pytestmark = pytest.mark.slow
DRIVER = Path(__file__).with_name("node_lost_driver.py")
def raylet_of(temp_dir: Path) -> psutil.Process:
    return next(p for p in psutil.process_iter(["name", "cmdline"])
                if p.info["name"] == "raylet" and any(str(temp_dir) in a for a in p.info["cmdline"] or []))


def drive(environ: dict, address: str, *args: str, timeout: float = 400) -> dict:
    """Run a driver on the two-node cluster at `address` (its state API found through it); its JSON line."""
    done = subprocess.run([sys.executable, str(DRIVER), *args], env=environ | {"RAY_ADDRESS": address},
                          capture_output=True, text=True, timeout=timeout, cwd=DRIVER.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_worker_node_lost_under_load_its_actors_come_back_on_the_head(small_model, starter_text, tmp_path):
    from mlray.fast_ingress import fast_ingress_environment
    from mlray.registry.models import Registry
    from mlray.spec import load_spec

    spec_file = watched_project(tmp_path, starter_text, "node-lost")
    load_spec(spec_file)  # a spec the drivers can load
    small = Registry(small_model[0])
    package = small.artifact_uri(small.model_name, "1")
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(as_json_rows(raw_rows(small_model[0], 200))))

    gcs = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLRAY_"))}
    environ |= fast_ingress_environment(tmp_path / "haproxy", environ) | {
        "RAY_AUTH_MODE": "token",  # as the cluster configs run it: every node and driver shows the token it has
        "PYTHONPATH": os.pathsep.join([str(DRIVER.parent), str(DRIVER.parents[1])])}
    short = Path(tempfile.mkdtemp(prefix="mlray-nodes-", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    head, worker = short / "head", short / "worker"
    try:
        ray_start(head, environ, "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
                  "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(free_port()),
                  "--ray-client-server-port", str(free_port()))
        ray_start(worker, environ, "--num-cpus", "2", "--address", f"127.0.0.1:{gcs}", "--node-ip-address", "127.0.0.2")
        address = f"127.0.0.1:{gcs}"
        placed = drive(environ, address, "setup", str(spec_file), package)["placement"]
        assert placed["control plane"] == placed["monitor"] == "worker" and "worker" in placed["ingress"], placed
        seen = drive(environ, address, "observe", str(spec_file), str(raylet_of(worker).pid),
                     str(rows))
        failed = sum(seen["failed"].values())
        print(f"\nthe worker node lost under load (2 clients; it held {seen['placed']}): {failed} of "
              f"{seen['answered'] + failed} requests failed {seen['failed']}; longest time without an answer "
              f"{seen['silence']:.1f} s; all back on the head ({seen['placement_after']}) {seen['healed_in']:.1f} s "
              f"after the kill; state the same {seen['same_state']}; windows chain: {seen['windows_chain']}; "
              f"{seen['kept_logged']} of {seen['kept']} answers logged, {seen['lost_buffered']} lost in the lost "
              "replica's buffer")
        assert not seen["timed_out"], f"the observing driver timed out waiting until: {seen['timed_out']}"
        assert seen["healed_in"] is not None and seen["monitor_reported"] and seen["windows_chain"]
        assert {node for nodes in seen["placement_after"].values() for node in nodes.split(",")} == {"head"}
        assert all(seen["same_state"].values()) and seen["logged_twice"] == 0
        assert seen["kept_logged"] == seen["kept"]
        assert failed <= 0.01 * (seen["answered"] + failed)
    finally:
        from node_lost_driver import lose_node

        for temp_dir in (worker, head):  # each node's processes: its raylet's process group and what the raylet started
            try:
                lose_node(raylet_of(temp_dir).pid)
            except StopIteration:  # gone already
                pass
        kill_processes_naming(str(short), str(tmp_path))  # and anything left that runs out of this test's folders
        shutil.rmtree(short, ignore_errors=True)
