"""The lake on an S3 API (moto's server on 127.0.0.1): storage options reach deltalake and Ray Data."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlray import dataplane
from mlray.lake.synthetic import corrupt, generate_transactions, write_source_file
from mlray.spec import load_spec

pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A local S3 in its own process (deltalake's calls hold the GIL, so not a thread of this one)."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    deadline = time.time() + 30
    while True:
        try:
            client.create_bucket(Bucket="lake")
            break
        except Exception:  # noqa: BLE001 - not listening yet
            assert time.time() < deadline, "moto_server did not start"
            time.sleep(0.3)
    yield endpoint
    server.terminate()
    server.wait(10)


def test_the_data_plane_on_s3(s3_endpoint, starter_text, tmp_path):
    options = (f"  storage_options: {{AWS_ENDPOINT_URL: '{s3_endpoint}', AWS_ACCESS_KEY_ID: test, "
               "AWS_SECRET_ACCESS_KEY: test, AWS_REGION: us-east-1, AWS_ALLOW_HTTP: 'true', "
               "AWS_S3_ALLOW_UNSAFE_RENAME: 'true'}")
    text = (starter_text.replace("  lake_root: null", f"  lake_root: s3://lake/{tmp_path.name}")
            .replace("  storage_options: {}", options).replace("min_rows: 1000", "min_rows: 10"))
    (tmp_path / "mlray.yaml").write_text(text)
    spec = load_spec(tmp_path / "mlray.yaml")
    write_source_file(corrupt(generate_transactions(600, seed=41), 0.05, seed=4), tmp_path / "in" / "a.csv")

    report = dataplane.ingest_source(spec, tmp_path / "in")
    assert report.rows_landed + report.rows_quarantined == 600 and report.rows_quarantined > 0
    assert dataplane.ingest_source(spec, tmp_path / "in").files[0].status == "skipped"
    lake = dataplane.lake_of(spec)
    assert lake.uri("transactions") == f"s3://lake/{tmp_path.name}/transactions"
    assert {t.name for t in lake.list()} == {"transactions", "transactions_quarantine"}
    result, _ = dataplane.validate_table(spec)
    assert result.passed, result.summary()
    fitted = dataplane.fit_features(spec)
    assert fitted.lineage.table_uri.startswith("s3://lake/") and fitted.lineage.rows == report.rows_landed
