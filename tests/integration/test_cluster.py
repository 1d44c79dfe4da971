"""mlray the way it runs for users: commands in separate shells against one Ray, and a real local cluster
(`ray start --head` on 127.0.0.1) whose serving state lives on a local S3 and outlives the actors and the disk that
held it. Everything runs in child processes: this test process is already a driver of the suite's own Ray."""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests
from helpers import TRAINED, free_port
from serving import wait_until

from mlray.fast_ingress import fast_ingress_environment
from mlray.lake.synthetic import generate_transactions, write_source_file
from mlray.registry.models import Registry
from mlray.spec import load_spec

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
REPO = Path(__file__).parents[2]
KEY = "cluster-key-789-0123456789abcdefghijklmn"


def _project(folder: Path, starter_text: str, small_model, platform: str) -> Path:
    """A project named `fleet` whose registry holds versions 1 and 2 (the suite's small model), champion 1."""
    text = (re.sub(r"platform:\n(?:  .*\n)+", "platform:\n" + (platform or "  state_dir: .mlray\n"), starter_text, count=1)
            .replace("name: card-fraud", "name: fleet", 1).replace("min_rows: 1000", "min_rows: 10")
            + f"serve:\n  port: {free_port()}\n  log_flush_s: 0.5\n"
            "rollout:\n  steps: [shadow, 50]\n  interval: 10m\n")
    (folder / "mlray.yaml").write_text(text)
    from mlray.serve import control

    spec = load_spec(folder / "mlray.yaml")
    small = Registry(small_model[0])
    package = small.artifact_uri(small.model_name, "1")
    registry = Registry(spec)
    registry.client.create_registered_model(spec.name)
    for _ in range(2):
        registry.register_package(package)
    control.client(spec).admit("1", "user:test")  # recorded in the lake's serving state, which the cluster reads
    return folder / "mlray.yaml"


def _mlray(*args, env=None, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "mlray"), *args], env=env, capture_output=True, text=True, timeout=300)
    assert not check or done.returncode == 0, f"mlray {' '.join(args)}: {done.stderr[-3000:]}"
    return done


def _json(*args, env=None):
    return json.loads(_mlray(*args, "--json", env=env).stdout)


def _get(url, path, key=KEY):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.get(f"{url}{path}", headers=headers, timeout=10)


def _clean_env(**extra) -> dict:
    """A fresh terminal's environment: nothing of mlray's or of Ray's address and authentication set by hand."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLRAY_", "RAY_ADDRESS", "RAY_AUTH_"))}
    return env | extra


def test_canary_start_in_a_second_shell_joins_the_ray_that_mlray_deploy_started(tmp_path, starter_text, small_model):
    spec_file = _project(tmp_path, starter_text, small_model, "")
    spec = load_spec(spec_file)
    url = f"http://127.0.0.1:{spec.serve.port}"
    serving = subprocess.Popen([str(BIN / "mlray"), "deploy", "--spec", str(spec_file)],
                               env=_clean_env(MLRAY_API_KEYS=KEY), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        assert wait_until(lambda: _health(url), timeout=180), "the first shell serves"
        started = _json("canary", "start", "2", "--spec", str(spec_file), env=_clean_env())
        assert started["status"] == "running" and started["challenger"] == "2"
        assert _get(url, "/v1/models").json()["rollout"]["shadow"] == "2"  # the same Ray, the same service
        assert (Path(spec.platform.state_dir) / "ray-address.json").is_file()
    finally:
        serving.send_signal(signal.SIGINT)
        output = serving.communicate(timeout=120)[0]
    assert "stopped" in output, output[-2000:]
    assert not (Path(spec.platform.state_dir) / "ray-address.json").exists(), "the address leaves with its Ray"
    assert wait_until(lambda: not _left_in_session(serving.pid), timeout=30), _left_in_session(serving.pid)


def test_serves_own_proxy_answers_413_to_a_large_body_from_every_client(tmp_path, starter_text, small_model):
    """A user who opts out of HAProxy (RAY_SERVE_ENABLE_HA_PROXY=0) gets Serve's own proxy: a body over max_body_bytes
    sent whole, without `Expect: 100-continue` (requests, urllib), still gets its 413."""
    import urllib.error
    import urllib.request

    spec_file = _project(tmp_path, starter_text, small_model, "")
    spec = load_spec(spec_file)
    url = f"http://127.0.0.1:{spec.serve.port}"
    serving = subprocess.Popen([str(BIN / "mlray"), "deploy", "--spec", str(spec_file)],
                               env=_clean_env(MLRAY_API_KEYS=KEY, RAY_SERVE_ENABLE_HA_PROXY="0"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert wait_until(lambda: _health(url), timeout=180), "mlray deploy serves through Serve's proxy"
        assert not any("haproxy" in name for name in _left_in_session(serving.pid))
        body = b'{"rows": [' + b",".join([b'{"amount": 1.0}'] * 200_000) + b"]}"
        assert len(body) > spec.serve.max_body_bytes
        headers = {"content-type": "application/json", "Authorization": f"Bearer {KEY}"}
        by_requests = requests.post(f"{url}/v1/predict", data=body, headers=headers, timeout=30).status_code
        with pytest.raises(urllib.error.HTTPError) as by_urllib:
            urllib.request.urlopen(urllib.request.Request(f"{url}/v1/predict", data=body, headers=headers), timeout=30)
        print(f"\nServe's own proxy, a {len(body):,}-byte body: requests {by_requests}, urllib {by_urllib.value.code}")
        assert by_requests == 413 and by_urllib.value.code == 413
    finally:
        serving.send_signal(signal.SIGINT)
        serving.communicate(timeout=120)


def _left_in_session(sid: int) -> list[str]:
    """The processes still alive in a session (a command started with start_new_session, and all it started: its
    Ray, Serve's HAProxy)."""
    import psutil

    left = []
    for process in psutil.process_iter(["name", "status"]):
        try:
            if os.getsid(process.pid) == sid and process.info["status"] != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {process.info['name']}")
        except (ProcessLookupError, PermissionError):
            pass
    return left


def _health(url) -> bool:
    try:
        return requests.get(f"{url}/v1/health", timeout=5).json().get("status") == "ok"
    except (requests.RequestException, ValueError):
        return False


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/version", timeout=5).status_code in (200, 401)
    except requests.RequestException:
        return False


@pytest.fixture
def local_cluster():
    """`ray start --head` on 127.0.0.1 with its own ports, temp folder and auth token; stopped by process id.
    Yields (GCS address, the environment of a shell holding the token, the Jobs API URL)."""
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths live under it
    port = free_port()
    env = _clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    env |= fast_ingress_environment(Path(temp) / "serve", environ=env)  # Serve's fast ingress, as cluster/ sets it
    ports = {"dashboard-port": free_port(), "dashboard-agent-listen-port": free_port(),
             "dashboard-agent-grpc-port": free_port(), "metrics-export-port": free_port(),
             "runtime-env-agent-port": free_port(), "ray-client-server-port": free_port()}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=4", f"--temp-dir={temp}", "--dashboard-host=127.0.0.1", "--disable-usage-stats",
         *(f"--{name}={value}" for name, value in ports.items())],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    jobs_url = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        assert wait_until(lambda: _answers(jobs_url), timeout=180), "the head's dashboard (the Jobs API) never answered"
        yield f"127.0.0.1:{port}", env, jobs_url
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-9", "-f", temp], check=False)  # any process of that cluster still alive
        shutil.rmtree(temp, ignore_errors=True)


KILL = """
import sys, ray
from ray.util.state import list_actors
ray.init(address=sys.argv[1], logging_level="ERROR")
victims = [a for a in list_actors(address=sys.argv[1], filters=[("state", "=", "ALIVE")], limit=10_000)
           if a.name.startswith(("fleet-control-", "fleet-rollout-controller")) or a.class_name.startswith("ServeReplica:fleet:")]
for actor in victims:
    ray.kill(ray.get_actor(actor.name, namespace=actor.ray_namespace), no_restart=True)
print(sorted(a.class_name for a in victims))
"""


def test_serving_state_outlives_its_owner_the_ingress_and_the_node_local_disk(tmp_path, starter_text, small_model,
                                                                             s3_endpoint, local_cluster):
    address, env, _ = local_cluster
    platform = (f"  ray_address: '{address}'\n  lake_root: s3://lake/{tmp_path.name}\n"
                f"  mlflow_tracking_uri: sqlite:///{tmp_path}/tracking/mlflow.db\n"  # stands in for a tracking server
                f"  storage_options: {{AWS_ENDPOINT_URL: '{s3_endpoint}', AWS_ACCESS_KEY_ID: test, "
                "AWS_SECRET_ACCESS_KEY: test, AWS_REGION: us-east-1, AWS_ALLOW_HTTP: 'true', "
                "AWS_S3_ALLOW_UNSAFE_RENAME: 'true'}\n")
    (tmp_path / "tracking").mkdir()
    spec_file = _project(tmp_path, starter_text, small_model, platform)
    spec = load_spec(spec_file)
    url, where = f"http://127.0.0.1:{spec.serve.port}", ["--spec", str(spec_file)]

    _json("deploy", *where, env=env | {"MLRAY_API_KEYS": KEY})  # keys from this shell only
    _json("canary", "start", "2", *where, env=env)  # another shell, without them
    before = {"plan": _get(url, "/v1/models").json()["rollout"], "rollout": _json("canary", "status", *where, env=env),
              "audit": _json("audit", "--limit", "100", *where, env=env)}
    assert before["plan"]["shadow"] == "2" and before["rollout"]["status"] == "running"
    assert [e["action"] for e in before["audit"]][:2] == ["canary.start.requested", "canary.start"]

    killed = subprocess.run([sys.executable, "-c", KILL, address], env=env, capture_output=True, text=True, timeout=120)
    assert "ServeReplica:fleet:ingress" in killed.stdout and "ControlPlane" in killed.stdout, killed.stderr[-2000:]
    shutil.rmtree(spec.platform.state_dir, ignore_errors=True)  # the node-local state folder, gone with its node

    assert wait_until(lambda: _health(url), timeout=180), "Serve replaced the ingress, which found a new owner"
    assert _get(url, "/v1/models").json()["rollout"] == before["plan"]
    assert _get(url, "/v1/models", key=None).status_code == 401 and _get(url, "/v1/models").status_code == 200
    after = _json("canary", "status", *where, env=env)
    assert {k: after[k] for k in ("status", "step", "champion", "challenger", "step_started")} == \
           {k: before["rollout"][k] for k in ("status", "step", "champion", "challenger", "step_started")}
    assert _json("audit", "--limit", "100", *where, env=env) == before["audit"]


def _submit(jobs_url: str, env: dict, *entrypoint: str) -> subprocess.CompletedProcess:
    """`ray job submit` as a user types it: the repository as working dir, the job's command after `--`."""
    return subprocess.run([str(BIN / "ray"), "job", "submit", "--address", jobs_url, "--working-dir", str(REPO), "--",
                           sys.executable, *entrypoint], env=env, capture_output=True, text=True, timeout=600)


def _summary(output: str) -> dict:
    """The job's one JSON summary, from the logs `ray job submit` tails."""
    start = output.index("\n{") + 1
    return json.loads(output[start:output.index("\n}", start) + 2])


def test_ray_job_submit_ingests_trains_and_deploys_on_a_token_auth_cluster(tmp_path, starter_text, local_cluster):
    from mlray.serve.auth import hash_key

    _, env, jobs_url = local_cluster
    text = (starter_text.replace("min_rows: 1000", "min_rows: 10") + TRAINED
            + f"serve:\n  port: {free_port()}\n  api_keys: ['{hash_key(KEY)}']\n")
    (tmp_path / "mlray.yaml").write_text(text)
    write_source_file(generate_transactions(3000, seed=3), tmp_path / "landing" / "day1.parquet")
    where = ["--spec", str(tmp_path / "mlray.yaml")]

    ingest = _submit(jobs_url, env, "jobs/ingest.py", *where, "--source", str(tmp_path / "landing"))
    assert ingest.returncode == 0, ingest.stdout[-3000:] + ingest.stderr[-3000:]
    assert _summary(ingest.stdout)["rows_landed"] == 3000
    train = _submit(jobs_url, env, "jobs/train.py", *where)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    trained = _summary(train.stdout)
    assert trained["decision"] == "champion" and trained["table_version"] == 1
    deployed = _submit(jobs_url, env, "jobs/deploy.py", *where)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    url = _summary(deployed.stdout)["url"]

    # the service outlives the job that deployed it, and answers over HTTP with the champion
    rows = json.loads(generate_transactions(3, seed=4).drop_columns(["is_fraud"]).to_pandas()
                      .to_json(orient="records", date_format="iso"))
    answer = requests.post(f"{url}/v1/predict", json={"rows": rows}, headers={"Authorization": f"Bearer {KEY}"},
                           timeout=30)
    assert answer.status_code == 200 and answer.json()["model_version"] == trained["model_version"]
    assert len(answer.json()["predictions"]) == 3
    assert requests.post(f"{url}/v1/predict", json={"rows": rows}, timeout=30).status_code == 401

    # a submission without the cluster's token, or with another one, is refused by the cluster, and nothing runs
    authorized = {"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"}
    jobs_before = requests.get(f"{jobs_url}/api/jobs/", headers=authorized, timeout=30).json()
    plain = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(tmp_path / "home")}
    wrong_token = plain | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}
    for shell, answer in ((plain, "Missing authentication token"), (wrong_token, "Invalid authentication token")):
        refused = _submit(jobs_url, shell, "jobs/train.py", *where)
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0 and answer in said, said[-3000:]
    assert requests.get(f"{jobs_url}/api/jobs/", timeout=30).status_code == 401
    assert len(requests.get(f"{jobs_url}/api/jobs/", headers=authorized, timeout=30).json()) == len(jobs_before)
