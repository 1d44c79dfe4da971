"""Autoscaling as `cluster/aws-gpu.yaml` sets it up, shown on this machine with Ray's fake multi-node provider: a second
Ray cluster whose head (no CPUs, as in the launcher config) runs the autoscaler with the config's worker node types, and
whose "nodes" are raylets the autoscaler starts and stops on this machine (the GPU workers' GPU is advertised, not
real). The driver runs as its own process (`autoscaling_driver.py`): this one is joined to the suite's Ray."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from helpers import free_port, kill_processes_naming, ray_start

pytestmark = pytest.mark.slow
DRIVER = Path(__file__).with_name("autoscaling_driver.py")
LAUNCHER = Path(__file__).parents[2] / "cluster" / "aws-gpu.yaml"
IDLE_MINUTES = 0.2  # the config's idle_timeout_minutes is 10: the same rule, shortened for a test
FAKE_NODE_OBJECT_STORE = 150 * 1024**2  # each fake node's object store (the default is 30% of this machine's memory)


def fake_cluster_config(launcher: dict, gcs_address: str) -> dict:
    """The launcher config's node types on Ray's fake multi-node provider (Ray's fake_multi_node/example.yaml)."""
    head = launcher["available_node_types"][launcher["head_node_type"]]
    types = {"ray.head.default": {"resources": dict(head["resources"]), "node_config": {}, "max_workers": 0}}
    for name, node in launcher["available_node_types"].items():
        if name != launcher["head_node_type"]:
            types[name] = {"resources": {**node["resources"], "object_store_memory": FAKE_NODE_OBJECT_STORE},
                           "node_config": {}, "min_workers": node.get("min_workers", 0), "max_workers": node["max_workers"]}
    return {"cluster_name": "mlray-fake", "max_workers": launcher["max_workers"],
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": gcs_address},
            "available_node_types": types, "head_node_type": "ray.head.default", "auth": {}, "upscaling_speed": 1.0,
            "idle_timeout_minutes": IDLE_MINUTES, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
            "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
            "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": []}


def autoscaled_project(folder: Path, starter_text: str) -> Path:
    """The starter project as the RayService serves it (models in the ingress), its ingress autoscaled from 1 to 3 on
    a target of one request at a time, quick to add a replica and 10 s to remove one. Its spec file's path."""
    from serving import KEY

    from mlray.serve.auth import hash_key

    text = starter_text.replace("name: card-fraud", "name: autoscaled", 1).replace("\ntrain: {}", "")
    text += (f"serve:\n  port: {free_port()}\n  model_placement: ingress\n  log_flush_s: 0.5\n"
             f"  api_keys: ['{hash_key(KEY)}']\n"
             "  autoscaling: {min_replicas: 1, max_replicas: 3, target_ongoing_requests: 1, upscale_delay_s: 1,"
             " downscale_delay_s: 10}\n")
    (folder / "mlray.yaml").write_text(text)
    return folder / "mlray.yaml"


def test_the_launcher_configs_node_types_scale_up_for_a_sweep_a_gpu_and_load_and_back_down_when_idle(
        small_model, starter_text, tmp_path):
    from serving import as_json_rows, raw_rows

    from mlray.registry.models import Registry
    from mlray.spec import load_spec

    launcher = yaml.safe_load(LAUNCHER.read_text())
    spec_file = autoscaled_project(tmp_path, starter_text)
    load_spec(spec_file)  # a spec the driver can load
    small = Registry(small_model[0])
    package = small.artifact_uri(small.model_name, "1")
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(as_json_rows(raw_rows(small_model[0], 200))))
    gcs = free_port()
    address = f"127.0.0.1:{gcs}"
    short = Path(tempfile.mkdtemp(prefix="mlray-as-", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    config = tmp_path / "fake-cluster.yaml"
    config.write_text(json.dumps(fake_cluster_config(launcher, address)))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLRAY_"))}
    environ |= {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                "RAY_AUTH_MODE": "token",  # as the launcher config starts every node; the token of ~/.ray/auth_token
                "PYTHONPATH": os.pathsep.join([str(DRIVER.parent), str(DRIVER.parents[1])])}
    idle_s = IDLE_MINUTES * 60
    try:
        ray_start(short / "head", environ, "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
                  "--num-cpus", "0", "--object-store-memory", str(FAKE_NODE_OBJECT_STORE), "--include-dashboard",
                  "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(free_port()),
                  "--ray-client-server-port", str(free_port()), "--autoscaling-config", str(config))
        done = subprocess.run([sys.executable, str(DRIVER), str(tmp_path / "tune"), str(idle_s), str(spec_file),
                               package, str(rows)],
                              env=environ | {"RAY_ADDRESS": address}, capture_output=True, text=True, timeout=600,
                              cwd=DRIVER.parent)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        kill_processes_naming(str(short), address)  # the head's processes and each fake node's
        shutil.rmtree(short, ignore_errors=True)

    served = seen["serve"]
    print(f"\nautoscaling on this machine (fake provider, {launcher['max_workers']} workers at most, idle timeout "
          f"{idle_s:.0f} s): a sweep of 4 trials × 4 CPUs on a head of {seen['cpus']:g} CPUs took {seen['sweep_s']} s "
          f"with {seen['cpu_peak']} CPU workers, gone {seen['cpu_gone_s']} s after it; a GPU run brought "
          f"{seen['gpu_peak']} GPU worker from 0, gone {seen['gpu_gone_s']} s after; serving: {served}")
    print(f"  refused: {seen['refused']}")
    for event in seen["events"]:
        print(f"  {event['t']:7.1f} s  {event['event']:9}  {event['type']:11}  {event['node']}")
    jobs_api = served["jobs_api"]  # what the drift monitor does from whichever node it runs on
    assert jobs_api["status"] == "SUCCEEDED" and not jobs_api["caller_on_head"]
    assert jobs_api["calls"] >= 2 and jobs_api["calls_on_head"] == jobs_api["calls"], jobs_api
    assert served["replicas_before"] == 1 and served["replicas_peak"] == 3 and served["scaled_up_s"] is not None
    assert served["scaled_down_s"] is not None, "Serve kept the ingress replicas it added after the load stopped"
    assert served["failed"] <= 0.01 * (served["answered"] + served["failed"]), served
    assert seen["cpus"] == 0 and seen["trials_done"] == 4
    assert seen["cpu_peak"] >= 2, "16 CPUs of trials at once need two CPU workers of 8"
    assert seen["cpu_gone_s"] is not None and seen["gpu_gone_s"] is not None, "idle workers were not removed"
    assert seen["gpu_peak"] == 1
    launched = [e for e in seen["events"] if e["event"] == "launch" and e["type"] == "gpu_workers"]
    assert len(launched) == 1 and launched[0]["t"] > seen["sweep_s"], "GPU workers start from 0, when asked for"
    for setting, refusal in seen["refused"].items():
        assert refusal is not None, f"use_gpu: {setting} trained on a GPU torch cannot use"
        assert "\n" not in refusal and "Traceback" not in refusal
        assert refusal.startswith("train.use_gpu: the cluster advertises 1 GPUs, but torch on a GPU node cannot use "
                                  "them (torch "), refusal
        assert "a CPU build" in refusal and "set train.use_gpu: false" in refusal
