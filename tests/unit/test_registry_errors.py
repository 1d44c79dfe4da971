"""A registry that fails to answer is not a registry that says 'no champion' (else the gate would skip the
comparison with the champion and crown any new model)."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mlflow.tracking import MlflowClient

from mlray.registry.models import Registry, RegistryUnavailable
from mlray.spec import parse_spec


class _Flaky(BaseHTTPRequestHandler):
    def _fail(self):
        self.send_response(503)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST = _fail

    def log_message(self, *args):
        pass


@pytest.fixture
def registry(tmp_path, starter_text):
    (tmp_path / "mlray.yaml").write_text(starter_text)
    return Registry(parse_spec(starter_text, base_dir=tmp_path))


def test_a_missing_alias_is_none(registry):
    assert registry.version_of("champion") is None  # no model registered yet
    registry.client.create_registered_model(registry.model_name)
    assert registry.version_of("champion") is None  # a model without the alias


def test_a_failing_tracking_server_raises_instead_of_saying_there_is_no_champion(registry, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        registry.client = MlflowClient(tracking_uri=url, registry_uri=url)
        with pytest.raises(RegistryUnavailable, match="did not say which version 'champion' is"):
            registry.version_of("champion")
    finally:
        server.shutdown()
