"""The node images: the Dockerfile's pins agree with pyproject.toml and the Makefile, and every config in cluster/
names an image `make image` builds (no Docker here: the files are read as Docker and make would read them)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGE = re.compile(r"(?P<repo>[a-z0-9][a-z0-9._/-]*/mlray):(?P<version>[\w.]+)-(?P<flavour>cpu|gpu)")


def _stages() -> dict[str, str]:
    """Each build stage's FROM image, by stage name, with the Dockerfile's global ARG defaults put in."""
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.split("\nFROM ")[0], re.M))
    stages = {}
    for base, name in re.findall(r"^FROM (\S+) AS (\w+)$", DOCKERFILE, re.M):
        stages[name] = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], base)
    return stages


def _stage_text(name: str) -> str:
    return re.search(rf"^FROM \S+ AS {name}$(.*?)(?=^FROM |\Z)", DOCKERFILE, re.M | re.S).group(1)


def _arg_default(name: str) -> str:
    return re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M).group(1)


def _make(*args: str) -> str:
    return subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_dockerfile_builds_on_the_ray_and_python_that_pyproject_pins():
    ray_pin = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray["))
    series = re.search(r"==(\d+\.\d+)\.\*", ray_pin).group(1)
    python = re.search(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"]).groups()
    stages = _stages()
    assert set(stages) >= {"cpu", "gpu"}
    assert stages["cpu"] == f"rayproject/ray:{_arg_default('RAY_VERSION')}-py{''.join(python)}"
    assert stages["gpu"] == stages["cpu"] + "-gpu"
    assert _arg_default("RAY_VERSION").startswith(series + ".")


def test_dockerfile_installs_the_torch_the_makefile_pins_in_the_build_of_each_target():
    torch = re.search(r"^TORCH \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert _arg_default("TORCH_VERSION") == torch
    for stage, index in (("cpu", "https://download.pytorch.org/whl/cpu"), ("gpu", "https://download.pytorch.org/whl/cu12")):
        text = _stage_text(stage)
        assert re.search(rf"^ARG TORCH_INDEX={re.escape(index)}", text, re.M), stage
        # torch first, from its own index (PyPI's Linux wheel is the CUDA build), then mlray, which keeps it
        torch_first = text.index('"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"')
        assert torch_first < text.index("pip install --no-cache-dir /app")


@pytest.mark.parametrize("stage", ["cpu", "gpu"])
def test_each_image_carries_the_package_and_the_jobs_the_manifests_run(stage):
    copied = set(re.findall(r"^COPY \S+ (.+) \S+$", _stage_text(stage), re.M))
    assert copied == {"pyproject.toml README.md", "mlray", "jobs"}
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".mlray", "mlray-demo"} <= ignored and not {"mlray", "jobs"} & ignored


def test_make_image_builds_both_targets_with_the_pinned_torch_and_tags_them_with_the_version():
    version = PYPROJECT["project"]["version"]
    torch = _arg_default("TORCH_VERSION")
    commands = _make("image", "IMAGE_REPO=registry.example/team/mlray").splitlines()
    for flavour in ("cpu", "gpu"):
        assert (f"docker build --target {flavour} --build-arg TORCH_VERSION={torch} "
                f"-t registry.example/team/mlray:{version}-{flavour} .") in commands
    pushed = _make("push-image", "IMAGE_REPO=registry.example/team/mlray")
    assert f"docker push registry.example/team/mlray:{version}-gpu" in pushed


def _named_images() -> list[tuple[str, str, bool]]:
    """(file, image, whether the node or pod it is on has a GPU) for every image a config in cluster/ names."""
    found = []
    for path in sorted((ROOT / "cluster").glob("*.yaml")):
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            _collect(doc, path.name, False, found)
    return found


def _collect(node, name: str, gpu: bool, found: list) -> None:
    if isinstance(node, dict):
        gpu = gpu or bool(node.get("resources", {}).get("GPU")) or "nvidia.com/gpu" in str(node.get("resources", {}))
        for key, value in node.items():
            if key in ("image", "head_image", "worker_image") and isinstance(value, str):
                found.append((name, value, gpu))
            else:
                _collect(value, name, gpu, found)
    elif isinstance(node, list):
        for item in node:
            _collect(item, name, gpu, found)


def test_every_config_names_an_image_make_image_builds_of_this_version_cuda_only_where_a_gpu_is():
    images = _named_images()
    assert {name for name, _, _ in images} >= {"aws-gpu.yaml", "gcp-gpu.yaml", "kuberay-raycluster.yaml"}
    for name, image, gpu in images:
        match = IMAGE.fullmatch(image)
        assert match, f"{name}: {image} is not <registry>/mlray:<version>-cpu|gpu"
        assert match["version"] == PYPROJECT["project"]["version"], f"{name}: {image}"
        assert match["flavour"] == ("gpu" if gpu else "cpu"), f"{name}: {image}"
