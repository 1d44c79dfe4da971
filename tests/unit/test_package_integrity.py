"""No pickle on the load path: a package loads only if its manifest matches the registry's tag and every file matches
the manifest; plain MLflow still loads the pyfunc flavour, logged as code."""

import hashlib
import pickle
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.utils.file_utils import local_file_uri_to_path

from mlray.features import fit
from mlray.lake.synthetic import generate_transactions
from mlray.registry.manifest import MANIFEST, MANIFEST_TAG, PackageTampered, PackageUnverified, pin, unpin, write_manifest
from mlray.registry.models import Registry
from mlray.registry.package import PackageConfig, load_package, log_package, naive_utc, predict_frame
from mlray.registry.tracking import point_at
from mlray.spec import ModelSpec, parse_spec, starter_spec

ROWS = generate_transactions(64, seed=3)


class Marker:
    """Unpickling it creates the file at `path`: what a planted pickle could do."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One package logged and registered by mlray (version 1, never changed): (registry, its parts, its folder)."""
    spec = parse_spec(starter_spec(), base_dir=tmp_path_factory.mktemp("project"))
    registry = Registry(spec)
    fitted = fit(ROWS, spec.features)
    config = PackageConfig("binary", "label", [False, True], len(fitted.numeric_names), fitted.cardinalities,
                           ModelSpec(hidden=[8]).model_dump(mode="json"), feature_version=fitted.version)
    net = config.network().eval()
    with mlflow.start_run(experiment_id=registry.experiment_id):
        info = log_package(net, config, fitted, {"name": spec.name}, ROWS.to_pandas()[fitted.source_columns],
                           registry.model_name)
    assert str(info.registered_model_version) == "1"
    return registry, (net, config, fitted), folder_of(registry, "1")


@pytest.fixture
def packaged(logged, tmp_path):
    """A copy of the package, registered with its tag as a new version: (registry, its parts, its folder, version)."""
    registry, parts, original = logged
    point_at(registry.platform)
    folder = Path(shutil.copytree(original, tmp_path / "package"))
    _, digest, label = unpin(registry.artifact_uri(registry.model_name, "1"))
    return registry, parts, folder, registry.register_package(pin(folder.as_uri(), digest, label))


def folder_of(registry: Registry, version: str) -> Path:
    return Path(local_file_uri_to_path(registry.client.get_model_version_download_uri(registry.model_name, version)))


def downloaded(registry: Registry) -> str:
    """Version 1 pinned at its logged model ('models:/m-…'): a location read through a download, not in place."""
    _, digest, label = unpin(registry.artifact_uri(registry.model_name, "1"))
    return pin(registry.client.get_model_version(registry.model_name, "1").source, digest, label)


def raw() -> pd.DataFrame:
    return naive_utc(ROWS.to_pandas())


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_registered_package_loads_verified_and_predicts_as_the_network_in_memory(logged):
    registry, (net, config, fitted), folder = logged
    name, expected = registry.model_name, predict_frame(net, config, fitted, raw())
    registry.client.set_registered_model_alias(name, "champion", "1")
    for uri in (f"models:/{name}/1", f"models:/{name}@champion", registry.artifact_uri(name, "1"), downloaded(registry)):
        package = load_package(uri)
        pd.testing.assert_frame_equal(package.predict(raw()), expected)
        assert package.config == config and package.fitted.version == fitted.version and not package.net.training
    pd.testing.assert_frame_equal(registry.load("1").reference(), naive_utc(ROWS.to_pandas()[fitted.source_columns]))
    tag = registry.client.get_model_version(name, "1").tags[MANIFEST_TAG]
    assert hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest() == tag == unpin(registry.artifact_uri(name, "1"))[1]


def test_plain_mlflow_loads_the_pyfunc_logged_as_code_and_nothing_is_pickled(packaged):
    registry, (net, config, fitted), folder, version = packaged
    assert not list(folder.rglob("*.pkl")) and (folder / "pyfunc_model.py").is_file()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in (folder / "MLmodel").read_text()
    predicted = mlflow.pyfunc.load_model(f"models:/{registry.model_name}/{version}").predict(raw())
    pd.testing.assert_frame_equal(predicted, predict_frame(net, config, fitted, raw()))
    load_package(f"models:/{registry.model_name}/{version}")  # what MLflow's load left in the local store is no change


def test_a_flipped_byte_in_the_weights_is_refused_naming_the_file_and_the_version(packaged):
    registry, _, folder, version = packaged
    flip_a_byte(folder / "artifacts" / "weights.pt")
    message = (rf"^model card-fraud v{version}: artifacts/weights.pt does not match its manifest "
               r"\(sha256 \w+… ≠ \w+…\); refusing to load$")
    for load in (lambda: load_package(f"models:/{registry.model_name}/{version}"), lambda: registry.load(version),
                 lambda: load_package(registry.artifact_uri(registry.model_name, version))):
        with pytest.raises(PackageTampered, match=message):
            load()


def test_a_manifest_rewritten_to_match_tampered_weights_is_refused_by_the_registry_tag(packaged):
    registry, _, folder, version = packaged
    flip_a_byte(folder / "artifacts" / "weights.pt")
    write_manifest(folder)
    with pytest.raises(PackageTampered, match=f"v{version}: {MANIFEST} does not match the registry's {MANIFEST_TAG}"):
        load_package(f"models:/{registry.model_name}/{version}")


def plant_pickle(folder: Path, marker: Path) -> None:
    (folder / "python_model.pkl").write_bytes(pickle.dumps(Marker(marker)))


def wrap_with_pickle(folder: Path, marker: Path) -> None:
    """The pyfunc wrapper replaced by a pickle: MLmodel now tells MLflow to unpickle python_model.pkl."""
    plant_pickle(folder, marker)
    mlmodel = (folder / "MLmodel").read_text()
    mlmodel = mlmodel.replace("loader_module: mlflow.pyfunc.loaders.code_model", "loader_module: mlflow.pyfunc.model")
    lines = [line for line in mlmodel.splitlines() if not line.strip().startswith("model_code_path:")]
    lines.insert(lines.index("    loader_module: mlflow.pyfunc.model"), "    python_model: python_model.pkl")
    (folder / "MLmodel").write_text("\n".join(lines) + "\n")


def replace_code(folder: Path, marker: Path) -> None:
    (folder / "pyfunc_model.py").write_text(f"open({str(marker)!r}, 'w')\n" + (folder / "pyfunc_model.py").read_text())


@pytest.mark.parametrize("attack, refusal, runs_under_plain_mlflow", [
    (plant_pickle, "python_model.pkl is not in its manifest", False),
    (wrap_with_pickle, "MLmodel does not match its manifest", True),
    (replace_code, "pyfunc_model.py does not match its manifest", True),
])
def test_a_planted_pickle_or_code_is_refused_and_never_runs(packaged, tmp_path, attack, refusal, runs_under_plain_mlflow):
    registry, _, folder, version = packaged
    marker = tmp_path / "pwned"
    attack(folder, marker)
    for uri in (f"models:/{registry.model_name}/{version}", registry.artifact_uri(registry.model_name, version)):
        with pytest.raises(PackageTampered, match=f"^model card-fraud v{version}: {refusal}.*; refusing to load$"):
            load_package(uri)
    assert not marker.exists()
    if runs_under_plain_mlflow:  # the attack is real: MLflow's own loader runs it
        try:
            mlflow.pyfunc.load_model(f"models:/{registry.model_name}/{version}")
        except Exception:  # noqa: BLE001 - the planted object is no model; what matters is that it ran
            pass
        assert marker.exists()


def test_a_version_registered_without_the_tag_is_refused_unless_its_logged_model_holds_it(packaged):
    from mlray.train.evaluate import champion_metrics

    registry, _, folder, version = packaged
    client, name = registry.client, registry.model_name
    untagged = str(client.create_model_version(name, folder.as_uri()).version)  # the files registered by hand
    with pytest.raises(PackageUnverified, match=f"^model {name} v{untagged} has no {MANIFEST_TAG} tag .*retrain it"):
        load_package(f"models:/{name}/{untagged}")
    with pytest.raises(PackageUnverified, match="comes without the digest of its manifest"):
        load_package(folder.as_uri())
    client.set_registered_model_alias(name, "champion", untagged)
    assert champion_metrics(registry, pd.DataFrame(), None, None) is None  # it cannot be served: the gate skips it

    again = str(mlflow.register_model(client.get_model_version(name, "1").source, name).version)
    assert MANIFEST_TAG not in client.get_model_version(name, again).tags  # its logged model holds the digest
    load_package(f"models:/{name}/{again}")
    flip_a_byte(folder / "artifacts" / "features.json")
    client.set_registered_model_alias(name, "champion", version)
    with pytest.raises(PackageTampered, match=f"v{version}: artifacts/features.json does not match"):
        champion_metrics(registry, pd.DataFrame(), None, None)


def test_a_tampered_package_is_refused_in_the_ingress_not_looked_up_again(project, monkeypatch):
    from mlray.serve import pool

    def tampered(platform, uri, version, schema):
        raise PackageTampered(f"model card-fraud v{version}: artifacts/weights.pt does not match its manifest")

    monkeypatch.setattr(pool, "LoadedVersion", tampered)
    models = pool.InProcessPool(project)
    monkeypatch.setattr(models, "_resolve", lambda version: pytest.fail("the registry was asked"))
    with pytest.raises(PackageTampered, match="v1: artifacts/weights.pt"):
        models._load({"1"}, {"1": "file:///artifacts/1#manifest_sha256=ab&model=card-fraud+v1"})
