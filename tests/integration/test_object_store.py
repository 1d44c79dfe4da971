"""The lake on an S3 API (moto's server on 127.0.0.1): storage options reach deltalake and Ray Data."""

from pathlib import Path

import pytest

from mlray import dataplane
from mlray.errors import UserError
from mlray.lake.synthetic import corrupt, generate_transactions, write_source_file
from mlray.spec import load_spec

pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")


def s3_spec(endpoint: str, starter_text: str, folder: Path, extra: str = ""):
    """The starter spec (and `extra` sections) with its lake in a folder of the local S3's bucket `lake`."""
    options = (f"  storage_options: {{AWS_ENDPOINT_URL: '{endpoint}', AWS_ACCESS_KEY_ID: test, "
               "AWS_SECRET_ACCESS_KEY: test, AWS_REGION: us-east-1, AWS_ALLOW_HTTP: 'true', "
               "AWS_S3_ALLOW_UNSAFE_RENAME: 'true'}")
    text = (starter_text.replace("  lake_root: null", f"  lake_root: s3://lake/{folder.name}")
            .replace("  storage_options: {}", options).replace("min_rows: 1000", "min_rows: 10"))
    if extra:
        text = text.replace("\ntrain: {}", "") + extra
    (folder / "mlray.yaml").write_text(text)
    return load_spec(folder / "mlray.yaml")


def test_the_data_plane_on_s3(s3_endpoint, starter_text, tmp_path):
    spec = s3_spec(s3_endpoint, starter_text, tmp_path)
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


def test_a_landing_folder_on_s3_is_ingested_exactly_once(s3_endpoint, starter_text, tmp_path):
    """`--source s3://…`: the folder is listed and read through the spec's storage options."""
    spec = s3_spec(s3_endpoint, starter_text, tmp_path)
    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    for name, seed in (("day1.csv", 51), ("day2.parquet", 52)):
        write_source_file(corrupt(generate_transactions(300, seed=seed), 0.05, seed=seed), tmp_path / name)
        client.upload_file(str(tmp_path / name), "lake", f"landing-{tmp_path.name}/2026/{name}")
    client.put_object(Bucket="lake", Key=f"landing-{tmp_path.name}/_SUCCESS", Body=b"")  # not data: left alone
    source = f"s3://lake/landing-{tmp_path.name}/"

    report = dataplane.ingest_source(spec, source)
    assert [f.path for f in report.files] == [f"{source}2026/day1.csv", f"{source}2026/day2.parquet"]
    assert report.rows_landed + report.rows_quarantined == 600 and report.rows_quarantined > 0
    assert dataplane.lake_of(spec).read("transactions").num_rows == report.rows_landed
    assert [f.status for f in dataplane.ingest_source(spec, source).files] == ["skipped", "skipped"]
    with pytest.raises(UserError, match=f"s3://lake/landing-{tmp_path.name}/nothing: no such file or folder"):
        dataplane.ingest_source(spec, f"s3://lake/landing-{tmp_path.name}/nothing")


def test_training_checkpoints_go_to_the_shared_storage_of_the_lake(s3_endpoint, starter_text, tmp_path):
    """A resumed run on another node must find them: under <lake_root>/_checkpoints, not the local state folder."""
    from projects import SMALL_MODEL

    from mlray.lake.schema import arrow_schema
    from mlray.train.run import train_model

    # on Ray Train workers (a table this small would train in this process, where no run resumes)
    spec = s3_spec(s3_endpoint, starter_text, tmp_path, SMALL_MODEL + "  execution: ray\n")
    dataplane.lake_of(spec).append("transactions", generate_transactions(1500, seed=61), batch_id="seed-61",
                                   schema=arrow_schema(spec.train_table))
    outcome = train_model(spec, run_name="on-s3")
    assert outcome.model_version == "1" and outcome.execution == "ray"
    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="lake", Prefix=f"{tmp_path.name}/_checkpoints/train/on-s3/")
            .get("Contents", [])]
    assert any(key.endswith("/checkpoint.ckpt") for key in keys), keys[:10]
    assert not (Path(spec.platform.state_dir) / "checkpoints").exists()


def test_a_sweep_keeps_its_trials_checkpoints_in_the_shared_storage_of_the_lake(s3_endpoint, starter_text, tmp_path):
    """One-worker trials train in their own process and copy each epoch's checkpoint to S3, where the driver reads the
    best one to register it."""
    from projects import SMALL_MODEL

    from mlray.lake.schema import arrow_schema
    from mlray.train.sweep import tune_model

    sweep = SMALL_MODEL + "tune:\n  trials: 2\n  scheduler: null\n  space:\n" \
                          "    train.learning_rate: {choice: [0.001, 0.01]}\n"
    spec = s3_spec(s3_endpoint, starter_text, tmp_path, sweep)
    dataplane.lake_of(spec).append("transactions", generate_transactions(1500, seed=62), batch_id="seed-62",
                                   schema=arrow_schema(spec.train_table))
    outcome = tune_model(spec, sweep="s3-sweep")
    assert outcome.model.model_version == "1" and len(outcome.trials) == 2
    assert all(t.status == "finished" and t.training_s > 0 for t in outcome.trials)
    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="lake", Prefix=f"{tmp_path.name}/_checkpoints/tune/s3-sweep/")
            .get("Contents", [])]
    trials_with_checkpoints = {key.split("/")[4] for key in keys if key.endswith("/checkpoint.ckpt")}
    assert len(trials_with_checkpoints) == 2, keys[:10]
