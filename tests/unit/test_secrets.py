"""The spec's secrets: read from the environment where used, never in a stored copy, scrubbed from free text."""

import json
import logging

import pytest
import yaml

from mlray.errors import UserError
from mlray.lake import Lake
from mlray.lake.specs import read_stored_spec, store_spec
from mlray.monitor.alerts import alert
from mlray.registry.models import RegistryUnavailable
from mlray.spec import parse_spec
from mlray.spec.secrets import redact_text, redacted_document

KEY, PASSWORD, TOKEN = "AKIA-SENTINEL-4242", "pw-SENTINEL-4242", "tok-SENTINEL-4242"


def _spec(starter_text, tmp_path, platform: dict, webhook: str):
    doc = yaml.safe_load(starter_text)
    doc["platform"] |= platform
    doc.setdefault("monitor", {})["alert_webhook"] = webhook
    return parse_spec(yaml.safe_dump(doc), "mlray.yaml", base_dir=tmp_path)


@pytest.fixture
def literal_spec(starter_text, tmp_path):
    return _spec(starter_text, tmp_path, {"storage_options": {"AWS_SECRET_ACCESS_KEY": KEY, "AWS_REGION": "eu-west-1",
                                                              "AWS_S3_LOCKING_PROVIDER": "dynamodb"},
                                          "mlflow_tracking_uri": f"https://alice:{PASSWORD}@mlflow.example:5000"},
                 f"https://hooks.example/services/{TOKEN}?sig={TOKEN}")


def test_the_stored_document_holds_no_literal_secret(literal_spec):
    doc = redacted_document(literal_spec)
    text = json.dumps(doc)
    assert KEY not in text and PASSWORD not in text and TOKEN not in text
    assert doc["platform"]["storage_options"] == {"AWS_SECRET_ACCESS_KEY": "***", "AWS_REGION": "eu-west-1",
                                                  "AWS_S3_LOCKING_PROVIDER": "dynamodb"}  # what a job needs stays
    assert doc["platform"]["mlflow_tracking_uri"] == "https://alice:***@mlflow.example:5000"
    assert doc["monitor"]["alert_webhook"] == "https://hooks.example/***"


def test_references_are_read_where_used_and_kept_as_names(starter_text, tmp_path, monkeypatch):
    spec = _spec(starter_text, tmp_path, {"storage_options": {"AWS_SECRET_ACCESS_KEY": "${LAKE_KEY}"},
                                          "mlflow_tracking_uri": "https://alice:${MLFLOW_PW}@mlflow.example"},
                 "${HOOK_URL}")
    monkeypatch.setenv("LAKE_KEY", KEY)
    monkeypatch.setenv("MLFLOW_PW", PASSWORD)
    assert spec.platform.credentials == {"AWS_SECRET_ACCESS_KEY": KEY}
    assert spec.platform.tracking_uri == f"https://alice:{PASSWORD}@mlflow.example"
    doc = redacted_document(spec)
    assert doc["platform"]["storage_options"] == {"AWS_SECRET_ACCESS_KEY": "${LAKE_KEY}"}
    assert doc["platform"]["mlflow_tracking_uri"] == "https://alice:${MLFLOW_PW}@mlflow.example"
    assert doc["monitor"]["alert_webhook"] == "${HOOK_URL}"


def test_an_unset_reference_is_refused_naming_the_field(starter_text, tmp_path, monkeypatch):
    spec = _spec(starter_text, tmp_path, {"storage_options": {"AWS_SECRET_ACCESS_KEY": "${NOT_SET_HERE}"}}, "${H}")
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    with pytest.raises(UserError, match=r"platform.storage_options.AWS_SECRET_ACCESS_KEY names \$\{NOT_SET_HERE\}"):
        _ = spec.platform.credentials


def test_a_stored_spec_reads_back_without_its_redacted_values(literal_spec, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    uri = store_spec(lake, literal_spec)
    assert uri.startswith(str(tmp_path / "lake") + "/_mlray/specs/")
    assert store_spec(lake, literal_spec) == uri  # named by content: stored once
    stored = open(uri).read()
    assert KEY not in stored and PASSWORD not in stored and TOKEN not in stored
    spec = read_stored_spec(uri)
    assert spec.platform.storage_options == {"AWS_REGION": "eu-west-1", "AWS_S3_LOCKING_PROVIDER": "dynamodb"}
    assert spec.platform.mlflow_tracking_uri == "https://mlflow.example:5000"
    assert spec.monitor.alert_webhook is None
    assert spec.model_dump(exclude={"platform", "monitor"}) == literal_spec.model_dump(exclude={"platform", "monitor"})


def test_a_missing_stored_spec_is_one_line(tmp_path):
    with pytest.raises(UserError, match="cannot read the stored spec"):
        read_stored_spec(str(tmp_path / "nowhere.json"))


def test_free_text_loses_uri_passwords_and_the_spec_secrets(literal_spec):
    text = (f"POST https://hooks.example/services/{TOKEN} failed; s3 key {KEY}; "
            f"registry https://alice:{PASSWORD}@mlflow.example:5000 down")
    scrubbed = redact_text(text, literal_spec)
    assert KEY not in scrubbed and PASSWORD not in scrubbed and TOKEN not in scrubbed
    assert "https://alice:***@mlflow.example:5000" in scrubbed


def test_errors_that_reach_incidents_and_alerts_name_no_password():
    assert str(RegistryUnavailable(f"the model registry at http://bob:{PASSWORD}@host did not answer")) == \
        "the model registry at http://bob:***@host did not answer"
    assert PASSWORD not in str(UserError(f"postgresql://bob:{PASSWORD}@db/mlflow: refused"))


def test_a_failing_webhook_logs_neither_its_url_nor_its_token(literal_spec, caplog):
    webhook = f"http://127.0.0.1:9/hooks/{TOKEN}?token={TOKEN}"  # port 9 (discard): nothing listens
    with caplog.at_level(logging.ERROR, logger="mlray.alerts"):
        alert(literal_spec.name, "drift", "window 3", webhook=webhook)
    assert "alert webhook http://127.0.0.1:9/*** failed" in caplog.text
    assert TOKEN not in caplog.text


def test_a_stored_spec_keeps_the_order_of_its_columns(literal_spec, tmp_path):
    """The inference log's struct of inputs follows the table's column order: a stored spec must keep it."""
    spec = read_stored_spec(store_spec(Lake(str(tmp_path / "lake")), literal_spec))
    assert list(spec.train_table.columns) == list(literal_spec.train_table.columns)
    assert [f.name for f in spec.features] == [f.name for f in literal_spec.features]
