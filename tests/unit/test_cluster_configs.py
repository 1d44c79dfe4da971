"""cluster/: launcher configs, KubeRay manifests, Prometheus and Grafana, checked against Ray, the repository and mlray.

No Ray is started: Ray's own cluster-config schema, Serve's application-builder contract and Ray's own Prometheus
exporter run in this process or a child process.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
CLUSTER = ROOT / "cluster"
STARTER = ROOT / "mlray" / "templates" / "starter.yaml"
README = ROOT / "README.md"


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _yamls() -> list[Path]:
    return sorted([*CLUSTER.glob("*.yaml"), *CLUSTER.glob("*.yml")])


LAUNCHER = [p for p in _yamls() if any("provider" in doc for doc in _documents(p))]
KUBERAY = [p for p in _yamls() if any(str(doc.get("apiVersion", "")).startswith("ray.io") for doc in _documents(p))]


def _ids(paths):
    return [p.name for p in paths]


# ---------------------------------------------------------------------------------------------- cluster launcher


def _validate_like_ray_up(config: dict) -> None:
    """What `ray up` checks before it calls the cloud: the provider's defaults merged in, then Ray's schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_there_are_launcher_configs_for_aws_and_gcp():
    providers = {_documents(p)[0]["provider"]["type"] for p in LAUNCHER}
    assert {"aws", "gcp"} <= providers


@pytest.mark.parametrize("path", LAUNCHER, ids=_ids(LAUNCHER))
def test_launcher_config_passes_rays_cluster_schema(path):
    _validate_like_ray_up(_documents(path)[0])


@pytest.mark.parametrize("path", LAUNCHER, ids=_ids(LAUNCHER))
def test_schema_check_refuses_a_worker_type_without_resources(path):
    import jsonschema

    config = _documents(path)[0]
    worker = next(name for name in config["available_node_types"] if name != config["head_node_type"])
    del config["available_node_types"][worker]["resources"]
    with pytest.raises(jsonschema.ValidationError, match="resources"):
        _validate_like_ray_up(config)


def _node_types(config: dict) -> tuple[dict, dict, dict]:
    """(head, GPU worker, CPU worker) node types."""
    types_ = config["available_node_types"]
    head = types_[config["head_node_type"]]
    workers = [t for name, t in types_.items() if name != config["head_node_type"]]
    gpu = [t for t in workers if t["resources"].get("GPU", 0) >= 1]
    cpu = [t for t in workers if not t["resources"].get("GPU")]
    assert len(gpu) == 1 and len(cpu) == 1, "one GPU and one CPU worker type"
    return head, gpu[0], cpu[0]


@pytest.mark.parametrize("path", LAUNCHER, ids=_ids(LAUNCHER))
def test_launcher_head_takes_no_work_and_gpu_workers_are_spot_from_zero(path):
    config = _documents(path)[0]
    head, gpu, cpu = _node_types(config)
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    assert gpu.get("min_workers", 0) == 0 and gpu["max_workers"] >= 1
    assert cpu["resources"]["CPU"] >= 1 and cpu.get("min_workers", 0) == 0
    node = gpu["node_config"]
    if config["provider"]["type"] == "aws":
        assert node["InstanceMarketOptions"]["MarketType"] == "spot"
    else:
        scheduling = node["scheduling"]
        assert scheduling.get("provisioningModel") == "SPOT" or scheduling.get("preemptible") is True
        assert scheduling["onHostMaintenance"] == "TERMINATE"  # GPU machines cannot live-migrate
        assert node["guestAccelerators"][0]["acceleratorCount"] == gpu["resources"]["GPU"]


@pytest.mark.parametrize("path", LAUNCHER, ids=_ids(LAUNCHER))
def test_every_ray_start_has_token_auth_and_the_dashboard_stays_local(path):
    config = _documents(path)[0]
    starts = [(kind, cmd) for kind in ("head_start_ray_commands", "worker_start_ray_commands")
              for cmd in config[kind] if "ray start" in cmd]
    assert {kind for kind, _ in starts} == {"head_start_ray_commands", "worker_start_ray_commands"}
    for kind, cmd in starts:
        before = cmd.split("ray start")[0]
        assert "RAY_AUTH_MODE=token" in before, f"{kind}: {cmd}"
        if kind == "head_start_ray_commands":
            assert "--dashboard-host=127.0.0.1" in cmd
    # the token `ray get-auth-token --generate` wrote reaches every node where Ray looks for it
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


def _fast_ingress() -> dict[str, str]:
    """What mlray sets for the Ray it starts and a cluster's nodes must set too (ports and the binary are per machine)."""
    from mlray import fast_ingress as fast

    return {fast.HAPROXY: "1", fast.THROUGHPUT: "1", fast.RETRY_ON: fast.REPLAYED, fast.RETRIES: "3",
            fast.PROXY_CHECK: fast.PROXY_CHECK_S}


@pytest.mark.parametrize("path", LAUNCHER, ids=_ids(LAUNCHER))
def test_every_ray_start_turns_the_fast_ingress_and_its_retries_on(path):
    import shlex

    config = _documents(path)[0]
    for kind in ("head_start_ray_commands", "worker_start_ray_commands"):
        for cmd in (c for c in config[kind] if "ray start" in c):
            assignments = dict(word.split("=", 1) for word in shlex.split(cmd.split("ray start")[0]) if "=" in word)
            assert {k: assignments.get(k) for k in _fast_ingress()} == _fast_ingress(), f"{kind}: {cmd}"


@pytest.mark.parametrize("path", LAUNCHER, ids=_ids(LAUNCHER))
def test_launcher_nodes_run_mlrays_images_and_install_nothing_when_they_join(path):
    config = _documents(path)[0]
    head, gpu, cpu = _node_types(config)
    docker = config["docker"]
    assert "image" not in docker, "one image for all nodes: the GPU one on the head, or the CPU one on GPU workers"
    assert docker["head_image"].endswith("-cpu") and docker["worker_image"].endswith("-cpu")  # tests/unit/test_images.py
    assert gpu["docker"]["worker_image"].endswith("-gpu")
    assert "docker" not in cpu, "CPU workers take the cluster's worker_image"
    assert not config.get("setup_commands") and not any("pip install" in c for t in (head, gpu, cpu)
                                                        for c in t.get("worker_setup_commands", []))


@pytest.mark.parametrize("path", LAUNCHER, ids=_ids(LAUNCHER))
def test_launcher_copies_no_environment_state_or_history_to_the_nodes(path):
    config = _documents(path)[0]
    local = {remote: source for remote, source in config["file_mounts"].items() if not source.startswith("~")}
    for remote, source in local.items():
        assert (ROOT / source).exists(), f"{remote}: {source}"
    assert ".gitignore" in config["rsync_filter"] and "**/.git" in config["rsync_exclude"]
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {".venv/", ".mlray/", "/mlray-demo/"} <= set(ignored)


@pytest.mark.parametrize("path", LAUNCHER, ids=_ids(LAUNCHER))
def test_every_ray_start_raises_the_open_files_limit_as_rays_own_configs_do(path):
    config = _documents(path)[0]
    for kind in ("head_start_ray_commands", "worker_start_ray_commands"):
        for cmd in (c for c in config[kind] if "ray start" in c):
            assert re.search(r"ulimit -n (\d+);", cmd.split("ray start")[0]).group(1) == "65536", f"{kind}: {cmd}"
    assert "--ulimit nofile=65536:65536" in config["docker"]["run_options"]  # the container lets it go that high


def test_what_the_readmes_one_machine_block_writes_stays_out_of_git_job_uploads_and_images():
    """`ray job submit --working-dir .` uploads what .gitignore does not leave out: the plain API key must not go."""
    block = README.read_text().split("### On one machine first", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    written = ["my.key", "landing/transactions.csv"]
    assert all(name in block for name in written)
    ignored = subprocess.run(["git", "check-ignore", *written], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert ignored == written
    docker_ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {"*.key", "landing"} <= docker_ignored


def test_every_aws_node_boots_a_current_image_and_reads_the_lake():
    """Without an ImageId Ray boots an Ubuntu 18.04 / CUDA 11.2 AMI; without an instance profile a worker has no
    credentials for s3:// (Ray gives its own role to the head only)."""
    config = _documents(CLUSTER / "aws-gpu.yaml")[0]
    profiles = {}
    for name, node in config["available_node_types"].items():
        image = node["node_config"]["ImageId"]
        assert re.fullmatch(r"resolve:ssm:/aws/service/deeplearning/ami/x86_64/"
                            r"base-oss-nvidia-driver-gpu-ubuntu-(22|24)\.04/latest/ami-id|ami-[0-9a-f]{8,17}", image), name
        profiles[name] = node["node_config"]["IamInstanceProfile"]["Name"]
    assert profiles == {"head": "mlray-head", "cpu_workers": "mlray-worker", "gpu_workers": "mlray-worker"}


def _statements(name: str) -> dict[str, dict]:
    return {s["Sid"]: s for s in json.loads((CLUSTER / name).read_text())["Statement"]}


def test_aws_roles_grant_the_lake_its_commit_lock_and_the_autoscaler_what_it_calls():
    lake = _statements("aws-iam-lake-policy.json")
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= set(lake["LakeObjects"]["Action"])
    assert "s3:ListBucket" in lake["LakeBucketList"]["Action"]
    # delta-rs's DynamoDB log store: the table the README's storage_options name
    lock = lake["DeltaCommitLock"]
    assert {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"} <= set(lock["Action"])
    assert lock["Resource"].endswith(":table/delta_log") and "DELTA_DYNAMO_TABLE_NAME: delta_log" in README.read_text()
    head = _statements("aws-iam-head-policy.json")
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateTags"} <= set(head["RayAutoscalerNodes"]["Action"])
    assert "ssm:GetParameters" in head["ResolveTheNodesImage"]["Action"]  # RunInstances resolves resolve:ssm: as it
    assert "iam:PassRole" in head["GiveWorkersTheirProfile"]["Action"]
    assert any(r.endswith("role/mlray-worker") for r in head["GiveWorkersTheirProfile"]["Resource"])


def test_gcp_workers_run_as_a_service_account_and_the_project_must_be_named():
    config = _documents(CLUSTER / "gcp-gpu.yaml")[0]
    head, gpu, cpu = _node_types(config)
    for node in (gpu, cpu):
        (account,) = node["node_config"]["serviceAccounts"]
        assert account["email"].startswith("mlray-worker@")
        assert "https://www.googleapis.com/auth/cloud-platform" in account["scopes"]
    # A placeholder id would make Ray try to create that project; null stops `ray up` at Ray's own assertion.
    assert config["provider"]["project_id"] is None
    source = Path(importlib.util.find_spec("ray.autoscaler._private.gcp").submodule_search_locations[0])
    assert "'project_id' must be set" in (source / "config.py").read_text()


# ---------------------------------------------------------------------------------------------- what the configs name

JOB = re.compile(r"(?<![\w/.])(/app/)?(jobs/\w+\.py)")
CLUSTER_FILE = re.compile(r"\bcluster/[\w.-]+\.(?:ya?ml|json|md)\b")
NAMED = sorted(CLUSTER.glob("*.y*ml")) + sorted(CLUSTER.glob("*.md"))


def _named(pattern: re.Pattern, group: int) -> list[str]:
    return sorted({m.group(group) for p in NAMED for m in pattern.finditer(p.read_text())})


def test_cluster_configs_name_the_training_and_data_plane_jobs():
    assert "jobs/train.py" in _named(JOB, 2) and "jobs/dataplane.py" in _named(JOB, 2)


@pytest.mark.parametrize("job", _named(JOB, 2))
def test_job_named_in_cluster_configs_is_in_jobs(job):
    """`python jobs/x.py` (with --working-dir .) and `/app/jobs/x.py` (this checkout copied to /app) are jobs/x.py."""
    assert (ROOT / job).is_file(), f"{job} is named in cluster/ but does not exist"


@pytest.mark.parametrize("name", _named(CLUSTER_FILE, 0))
def test_cluster_file_named_in_configs_exists(name):
    assert (ROOT / name).is_file()


# ---------------------------------------------------------------------------------------------- KubeRay


def _kuberay() -> list[tuple[str, dict]]:
    return [(p.name, doc) for p in KUBERAY for doc in _documents(p)]


def _ray_cluster(doc: dict) -> dict:
    spec = doc["spec"]
    return {"RayCluster": lambda: spec, "RayJob": lambda: spec["rayClusterSpec"],
            "RayService": lambda: spec["rayClusterConfig"]}[doc["kind"]]()


def _pod_specs(cluster: dict) -> list[tuple[str, dict]]:
    return [("head", cluster["headGroupSpec"]["template"]["spec"])] + \
        [(group["groupName"], group["template"]["spec"]) for group in cluster["workerGroupSpecs"]]


def _gpus(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def test_kuberay_manifests_are_ray_io_v1_and_cover_cluster_jobs_and_service():
    docs = _kuberay()
    assert {doc["apiVersion"] for _, doc in docs} == {"ray.io/v1"}
    assert {doc["kind"] for _, doc in docs} == {"RayCluster", "RayJob", "RayService"}
    entrypoints = [doc["spec"]["entrypoint"] for _, doc in docs if doc["kind"] == "RayJob"]
    assert any("/app/jobs/train.py --spec /config/mlray.yaml" in e for e in entrypoints)
    assert any("/app/jobs/dataplane.py" in e for e in entrypoints)


@pytest.mark.parametrize("name,doc", _kuberay(), ids=[n for n, _ in _kuberay()])
def test_kuberay_head_takes_no_work_and_the_cluster_autoscales(name, doc):
    cluster = _ray_cluster(doc)
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["enableInTreeAutoscaling"] is True
    groups = cluster["workerGroupSpecs"]
    assert any(not any(_gpus(c) for c in g["template"]["spec"]["containers"]) for g in groups), "a CPU group"


@pytest.mark.parametrize("name,doc", _kuberay(), ids=[n for n, _ in _kuberay()])
def test_kuberay_gpu_groups_start_at_zero_with_a_gpu_per_pod(name, doc):
    groups = [g for g in _ray_cluster(doc)["workerGroupSpecs"]
              if any(_gpus(c) for c in g["template"]["spec"]["containers"])]
    if doc["kind"] == "RayCluster" or "train.py" in doc["spec"].get("entrypoint", ""):
        assert groups, "training needs a GPU group"
    for group in groups:
        assert group["minReplicas"] == 0 and group.get("replicas", 0) == 0 and group["maxReplicas"] >= 1
        assert all(_gpus(c) == 1 for c in group["template"]["spec"]["containers"])


@pytest.mark.parametrize("name,doc", _kuberay(), ids=[n for n, _ in _kuberay()])
def test_kuberay_token_auth_is_on_in_every_ray_container(name, doc):
    cluster = _ray_cluster(doc)
    assert cluster["authOptions"]["mode"] == "token"  # KubeRay makes the token and uses it itself
    for group, pod in _pod_specs(cluster):
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("RAY_AUTH_MODE") == "token", f"{group}/{container['name']}"


@pytest.mark.parametrize("name,doc", _kuberay(), ids=[n for n, _ in _kuberay()])
def test_kuberay_nodes_with_the_fast_ingress_also_replay_requests_of_a_dead_replica(name, doc):
    cluster = _ray_cluster(doc)
    for group, pod in _pod_specs(cluster):
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if "RAY_SERVE_ENABLE_HA_PROXY" in env:
                assert {k: env.get(k) for k in _fast_ingress()} == _fast_ingress(), f"{group}/{container['name']}"


def _mounted(pod: dict, path: str) -> bool:
    """Whether `path` lies under a volume of `pod` that a ConfigMap fills."""
    config_maps = {v["name"] for v in pod.get("volumes", []) if "configMap" in v}
    return any(path.startswith(m["mountPath"].rstrip("/") + "/") and m["name"] in config_maps
               for c in pod["containers"] for m in c.get("volumeMounts", []))


@pytest.mark.parametrize("name,doc", _kuberay(), ids=[n for n, _ in _kuberay()])
def test_kuberay_spec_paths_are_mounted_on_every_pod(name, doc):
    """The spec a job or the Serve app loads is the ConfigMap's, on the head (the driver) and every worker."""
    paths = []
    if doc["kind"] == "RayJob":
        paths.append(re.search(r"--spec (\S+)", doc["spec"]["entrypoint"]).group(1))
    if doc["kind"] == "RayService":
        paths += [app["args"]["spec"] for app in yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"]]
    for group, pod in _pod_specs(_ray_cluster(doc)):
        env = {e["name"]: e.get("value") for c in pod["containers"] for e in c.get("env", [])}
        for path in [*paths, env["MLRAY_SPEC"]]:
            assert _mounted(pod, path), f"{group}: {path}"


def _head_service(doc: dict) -> str | None:
    """The head Service KubeRay makes for a RayCluster or RayService (a RayJob's cluster gets a generated name)."""
    if doc["kind"] == "RayJob":
        return None
    custom = _ray_cluster(doc)["headGroupSpec"].get("headService", {}).get("metadata", {}).get("name")
    return custom or f"{doc['metadata']['name']}-head-svc"


def test_kuberay_objects_and_their_head_services_have_names_of_their_own():
    """A RayService rewrites the selector of a `<name>-head-svc` it finds, so a RayCluster of the same name loses its."""
    docs = [doc for _, doc in _kuberay()]
    names = [doc["metadata"]["name"] for doc in docs]
    services = [svc for svc in map(_head_service, docs) if svc]
    assert len(set(names)) == len(names) and len(set(services)) == len(services)
    forwarded = set(re.findall(r"port-forward svc/([\w-]+) 8265", README.read_text()))
    assert forwarded and forwarded <= set(services), forwarded


def test_kuberay_clusters_share_one_token_secret_the_readme_creates_and_reads():
    secrets = {_ray_cluster(doc)["authOptions"].get("secretName") for _, doc in _kuberay()}
    assert len(secrets) == 1 and None not in secrets, "authOptions.secretName: the token survives upgrades"
    (secret,) = secrets
    readme = README.read_text()
    assert f"kubectl create secret generic {secret} --from-literal=auth_token=" in readme
    assert f"kubectl get secret {secret} -o jsonpath='{{.data.auth_token}}'" in readme


def test_every_kuberay_pod_runs_as_the_service_account_that_carries_the_clouds_credentials():
    (account,) = _documents(CLUSTER / "kuberay-serviceaccount.yaml")
    assert account["kind"] == "ServiceAccount"
    annotations = account["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"].endswith(":role/mlray-worker")  # IRSA
    assert annotations["iam.gke.io/gcp-service-account"].startswith("mlray-worker@")  # Workload Identity
    for name, doc in _kuberay():
        for group, pod in _pod_specs(_ray_cluster(doc)):
            assert pod["serviceAccountName"] == account["metadata"]["name"], f"{name}/{group}"


# The node pools the README names: 8 vCPUs; memory of the smaller machine of each (GiB): n2-standard-8 (32) and
# m6i.2xlarge for CPU, n1-standard-8 + T4 (30 GB) and g5.2xlarge for GPU.
POOLS = {"cpu": (8, 32.0), "gpu": (8, 30 * 10**9 / 2**30)}
DAEMONSETS = (0.4, 1.0)  # CPUs and GiB the cluster's own daemons (CNI, proxy, logging, device plugin) may hold


def _allocatable(cpus: int, memory_gib: float) -> tuple[float, float]:
    """What a node leaves to pods: GKE's reservations (the larger of EKS's and GKE's) and its eviction threshold."""
    cpu_reserved = 0.06 + 0.01 + 0.005 * 2 + 0.0025 * (cpus - 4)
    steps = [(4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06)]
    left, memory_reserved = memory_gib, 0.0
    for size, share in steps:
        memory_reserved += min(left, size) * share
        left -= min(left, size)
    return cpus - cpu_reserved, memory_gib - memory_reserved - 0.1


def _quantity(value: str) -> float:
    units = {"Gi": 1.0, "Mi": 1 / 1024, "m": 1e-3}
    for unit, scale in units.items():
        if str(value).endswith(unit):
            return float(str(value)[: -len(unit)]) * scale
    return float(value)


@pytest.mark.parametrize("name,doc", _kuberay(), ids=[n for n, _ in _kuberay()])
def test_kuberay_pods_ask_for_what_they_may_use_and_fit_a_node_of_their_pool(name, doc):
    for group, pod in _pod_specs(_ray_cluster(doc)):
        pool = pod["nodeSelector"]["mlray.io/pool"]
        cpu_free, memory_free = (free - taken for free, taken in zip(_allocatable(*POOLS[pool]), DAEMONSETS))
        (container,) = [c for c in pod["containers"] if c["name"].startswith("ray-")]
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], f"{name}/{group}: Guaranteed, as KubeRay advises"
        assert _quantity(resources["requests"]["cpu"]) <= cpu_free, f"{name}/{group}"
        assert _quantity(resources["requests"]["memory"]) <= memory_free, f"{name}/{group}"
        assert (pool == "gpu") == bool(_gpus(container)), f"{name}/{group}"
    for machine in ("m6i.2xlarge", "n2-standard-8", "g5.2xlarge", "n1-standard-8", "mlray.io/pool"):
        assert machine in README.read_text()


@pytest.mark.parametrize("name,doc", _kuberay(), ids=[n for n, _ in _kuberay()])
def test_kuberay_head_service_keeps_the_ports_clients_and_kuberay_use(name, doc):
    """KubeRay builds the head Service from the head container's ports when it declares any: a RayJob's submitter and
    `kubectl port-forward` reach the Jobs API through `dashboard`, drivers the GCS through `gcs-server`."""
    head = _ray_cluster(doc)["headGroupSpec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in head.get("ports", [])}
    assert {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080}.items() <= ports.items(), name


def test_prometheus_operator_scrapes_rays_agent_and_haproxy_on_every_ray_pod():
    from ray.serve._private.constants import RAY_SERVE_HAPROXY_METRICS_PORT

    (monitor,) = _documents(CLUSTER / "kuberay-podmonitor.yaml")
    assert monitor["kind"] == "PodMonitor"
    (selector,) = monitor["spec"]["selector"]["matchExpressions"]
    assert selector["key"] == "ray.io/node-type" and set(selector["values"]) == {"head", "worker"}
    scraped = {endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]}
    assert scraped == {"metrics", "haproxy-metrics"}
    for name, doc in _kuberay():
        for group, pod in _pod_specs(_ray_cluster(doc)):
            for container in pod["containers"]:
                ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                assert ports["metrics"] == 8080, f"{name}/{group}"
                if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
                    assert ports["haproxy-metrics"] == RAY_SERVE_HAPROXY_METRICS_PORT, f"{name}/{group}"


def _serve_applications() -> list[dict]:
    services = [doc for _, doc in _kuberay() if doc["kind"] == "RayService"]
    assert services
    return [app for doc in services for app in yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"]]


def test_rayservice_import_path_is_a_serve_application_builder():
    for app in _serve_applications():
        module, attribute = app["import_path"].split(":")
        builder = getattr(importlib.import_module(module), attribute)
        # Serve's contract for a builder (ray.serve._private.api.call_user_app_builder_with_args_if_necessary)
        assert isinstance(builder, types.FunctionType) and len(inspect.signature(builder).parameters) == 1
        assert app["route_prefix"] == "/"


def _starter_spec(tmp_path: Path, placement: str | None) -> Path:
    text = STARTER.read_text()
    if placement:
        text += f"\nserve:\n  model_placement: {placement}\n"
    path = tmp_path / "mlray.yaml"
    path.write_text(text)
    return path


def test_application_builder_gives_the_ingress_deploy_starts_with_models_inside(tmp_path):
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from mlray.serve.application import build

    app = call_user_app_builder_with_args_if_necessary(build, {"spec": str(_starter_spec(tmp_path, "ingress"))})
    ingress = app._bound_deployment
    spec, local = ingress.init_args
    assert ingress.name == "ingress" and local is True and spec.name == "card-fraud"


def test_application_builder_refuses_models_outside_the_ingress(tmp_path, monkeypatch):
    from mlray.errors import UserError
    from mlray.serve.application import build

    path = _starter_spec(tmp_path, None)  # model_placement: auto
    with pytest.raises(UserError, match="model_placement"):
        build({"spec": str(path)})
    monkeypatch.setenv("MLRAY_SERVE__MODEL_PLACEMENT", "ingress")  # what the RayService's pods set
    assert build({"spec": str(path)})._bound_deployment.init_args[1] is True


# ---------------------------------------------------------------------------------------------- Prometheus and Grafana
#
# How Ray 2.60 exports a ray.util.metrics (or ray.serve.metrics) metric, read from its source:
# - the metric goes from the worker's core worker (C++) to its node's dashboard agent over OTLP; with
#   RAY_enable_open_telemetry on (the default, ray/_private/ray_constants.py), the agent's
#   ray/_private/telemetry/open_telemetry_metric_recorder.py creates an OpenTelemetry instrument named
#   f"{NAMESPACE}_{name}" with NAMESPACE = "ray" and unit "1" (mapped to no unit suffix), read by
#   opentelemetry-exporter-prometheus (PrometheusMetricReader) on the node's metrics port;
# - a Counter is a monotonic sum (ray/util/metrics.py uses CythonCount), so Prometheus sees ray_<name>_total; a
#   Gauge is ray_<name>; a Histogram is ray_<name>_bucket{le=...}, ray_<name>_sum and ray_<name>_count (the agent
#   rebuilds the buckets from counts, so _sum is approximate: quantiles come from the buckets);
# - tag keys become labels as they are; Ray adds its own (e.g. SessionName, WorkerId, Component), Serve adds
#   deployment, replica and application (ray/serve/metrics.py), and the exporter adds otel_scope_* labels;
# - the legacy OpenCensus path (RAY_enable_open_telemetry=0, ray/_private/metrics_agent.py) also prefixes "ray_"
#   and exports a Counter as ray_<name>_total, plus a deprecated gauge ray_<name> (RAY_EXPORT_COUNTER_AS_GAUGE).
# So the dashboard queries ray_mlray_requests_total, ray_mlray_request_latency_s_bucket, ray_mlray_traffic_weight...
# The test below derives the names by running mlray's definitions through the agent's own recorder and scrape.

_EXPORT = r'''
import json, sys
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from ray.serve import metrics as serve_metrics
from ray.util import metrics as ray_metrics
from ray._private.telemetry.open_telemetry_metric_recorder import OpenTelemetryMetricRecorder
from mlray import metrics

SERVE_TAGS = (serve_metrics.DEPLOYMENT_TAG, serve_metrics.REPLICA_TAG, serve_metrics.APPLICATION_TAG)

def samples():
    text = generate_latest(REGISTRY).decode()
    return {(s.name, frozenset(s.labels)) for f in text_string_to_metric_families(text) for s in f.samples}

recorder, out = OpenTelemetryMetricRecorder(), {}
recorder.register_gauge_metric("warm_up", "")  # the first scrape with data also brings target_info
recorder.set_metric_value("warm_up", {}, 1.0)
samples()
for group in (metrics.serving, metrics.rollout, metrics.monitor):
    for metric in group().values():
        name, tags = metric._name, metric._tag_keys
        if isinstance(metric, (serve_metrics.Counter, serve_metrics.Gauge, serve_metrics.Histogram)):
            tags = SERVE_TAGS + tags  # what a replica adds (ray.serve.metrics._add_serve_metric_tags)
        values = {key: "x" for key in tags}
        before = samples()
        if isinstance(metric, ray_metrics.Counter):
            recorder.register_counter_metric(name, "")
            recorder.set_metric_value(name, values, 1.0)
        elif isinstance(metric, ray_metrics.Gauge):
            recorder.register_gauge_metric(name, "")
            recorder.set_metric_value(name, values, 0.5)
        elif isinstance(metric, ray_metrics.Histogram):
            recorder.register_histogram_metric(name, "", metric.boundaries)
            recorder.record_histogram_aggregated_batch(
                name, [{"tags": values, "bucket_counts": [1] * (len(metric.boundaries) + 1)}])
        else:
            sys.exit(f"unknown metric type {type(metric)}")
        new = samples() - before
        out[name] = {"kind": type(metric).__name__, "tags": list(tags),
                     "series": {series: sorted(set().union(*(l for s, l in new if s == series)))
                                for series in {s for s, _ in new}}}
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def exported() -> dict:
    """mlray metric → its kind, tag keys and the series (name → labels) Ray's metrics agent exports for it.
    In a child process: the exporter registers itself in process-wide registries."""
    done = subprocess.run([sys.executable, "-c", _EXPORT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_exported_names_follow_rays_naming_rule(exported):
    suffixes = {"Counter": ["_total"], "Gauge": [""], "Histogram": ["_bucket", "_count", "_sum"]}
    for name, info in exported.items():
        assert sorted(info["series"]) == sorted(f"ray_{name}{s}" for s in suffixes[info["kind"]]), name
        for series, labels in info["series"].items():
            assert set(info["tags"]) <= set(labels), series
            assert ("le" in labels) == series.endswith("_bucket")


STRING = re.compile(r'"(?:\\.|[^"\\])*"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"\{([^}]*)\}")
LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*(?:\{[^}]*\})?\s*,\s*(\w+)\s*\)")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
            "inf", "nan"}


def _promql(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) a PromQL expression uses."""
    text = STRING.sub('""', expr)
    labels = {label for m in MATCHERS.finditer(text) for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m.group(1))}
    labels |= {label for m in GROUPING.finditer(text) for label in re.findall(r"\w+", m.group(1))}
    bare = re.sub(r"\[[^\]]*\]", " ", MATCHERS.sub(" ", GROUPING.sub(" ", text)))
    names = {m.group(1) for m in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)(\s*\()?", bare)
             if not m.group(2) and m.group(1) not in KEYWORDS}
    return names, labels


def _dashboard() -> dict:
    return json.loads((CLUSTER / "grafana-mlray.json").read_text())


def _queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every panel target."""
    return [(panel["title"], target["expr"]) for panel in _dashboard()["panels"] if panel["type"] != "row"
            for target in panel["targets"]]


def _variable_queries() -> list[tuple[str, str]]:
    """(metric, label) of every `label_values(metric, label)` variable."""
    found = []
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = LABEL_VALUES.fullmatch(variable["query"]["query"].strip())
            assert match, f"variable {variable['name']}: expected label_values(metric, label)"
            found.append((match.group(1), match.group(2)))
    return found


def test_dashboard_queries_only_series_mlray_exports(exported):
    series = {s for info in exported.values() for s in info["series"]}
    for title, expr in _queries():
        names, _ = _promql(expr)
        assert names and names <= series, f"{title}: {sorted(names - series)} in {expr}"
    for metric, _ in _variable_queries():
        assert metric in series


def test_every_mlray_metric_has_a_panel(exported):
    used = set().union(*(_promql(expr)[0] for _, expr in _queries()))
    for name, info in exported.items():
        assert used & set(info["series"]), f"no panel shows {name}"


def test_dashboard_filters_and_groups_by_labels_the_series_carry(exported):
    labels_of = {s: set(labels) for info in exported.values() for s, labels in info["series"].items()}
    for title, expr in _queries():
        names, labels = _promql(expr)
        carried = set().union(*(labels_of[n] for n in names))
        assert labels <= carried, f"{title}: {sorted(labels - carried)} in {expr}"
    for metric, label in _variable_queries():
        assert label in labels_of[metric]


def test_dashboard_reads_a_prometheus_datasource_variable():
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in _dashboard()["panels"]:
        if panel["type"] != "row":
            sources = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
            assert all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources), panel["title"]


def test_prometheus_discovers_nodes_from_the_file_ray_writes():
    import ray.dashboard.modules.metrics as ray_metrics_module
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    ours = yaml.safe_load((CLUSTER / "prometheus.yml").read_text())
    files = {f for job in ours["scrape_configs"] for sd in job.get("file_sd_configs", []) for f in sd["files"]}
    assert f"/tmp/ray/{PROMETHEUS_SERVICE_DISCOVERY_FILE}" in files
    # the same discovery file as the config Ray ships (ray metrics launch-prometheus)
    shipped = Path(ray_metrics_module.__file__).parent / "export" / "prometheus" / "prometheus.yml"
    theirs = yaml.safe_load(shipped.read_text())
    assert files & {f for job in theirs["scrape_configs"] for sd in job.get("file_sd_configs", []) for f in sd["files"]}
