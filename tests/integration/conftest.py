import subprocess
import sys
from pathlib import Path

import pytest
from helpers import free_port, wait_until

from mlray import dataplane
from mlray.lake.schema import arrow_schema
from mlray.lake.synthetic import generate_transactions


@pytest.fixture(autouse=True)
def _ray(ray_session):
    return ray_session


@pytest.fixture
def load_transactions(project):
    """Append `rows` synthetic transactions to the project's train table; returns the Lake."""
    lake = dataplane.lake_of(project)

    def load(rows: int, seed: int):
        lake.append("transactions", generate_transactions(rows, seed=seed), batch_id=f"seed-{seed}",
                    schema=arrow_schema(project.train_table))
        return lake

    return load


@pytest.fixture(scope="session")
def small_model(ray_session, tmp_path_factory):
    """One small binary model, trained and registered once per test run (batch and online inference share it):
    (spec, TrainOutcome). Its spec serves on a free port of 127.0.0.1 with SERVE_KEY as its API key."""
    import os

    from projects import SERVE_KEY, SMALL_MODEL, make_project

    from mlray.serve.auth import hash_key
    from mlray.spec import starter_spec
    from mlray.training import train as train_and_admit

    port = free_port()
    serve_section = (f"serve:\n  port: {port}\n  model_placement: replicas\n  log_flush_s: 0.5\n"
                     f"  api_keys: ['{hash_key(SERVE_KEY)}']\n")
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("MLRAY_")]:
            patch.delenv(key)
        spec = make_project(tmp_path_factory.mktemp("small-model"), starter_spec(), SMALL_MODEL + serve_section,
                            rows=3000)
        return spec, train_and_admit(spec)


@pytest.fixture(scope="module")
def served(small_model):
    """The run's small model as the champion (version 1), the same package registered once more (returned as the
    third item), and the champion deployed behind the ingress; Serve and mlray's actors stop with the module."""
    from serving import serving

    yield from serving(small_model[0])


@pytest.fixture(scope="session")
def s3_endpoint():
    """A local S3 (moto's server on 127.0.0.1) with a bucket `lake`, in its own process (deltalake's calls hold the
    GIL, so not a thread of this one)."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto")
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")

    def bucket_made() -> bool:
        try:
            client.create_bucket(Bucket="lake")
            return True
        except Exception:  # noqa: BLE001 - not listening yet
            return False

    assert wait_until(bucket_made, timeout=60, every=0.3), "moto_server did not start"
    yield endpoint
    server.terminate()
    server.wait(10)
