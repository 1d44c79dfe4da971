from datetime import timedelta
from pathlib import Path

import pytest

from mlray.errors import UserError
from mlray.spec import load_spec, parse_duration, parse_spec


def test_starter_spec_loads_with_defaults(starter_text, tmp_path):
    spec = parse_spec(starter_text, "mlray.yaml", base_dir=tmp_path)
    assert spec.data.train_table == "transactions"
    assert spec.data.label_column == "is_fraud"
    assert spec.platform.state_dir == str(tmp_path / ".mlray")
    assert spec.platform.lake_uri == str(tmp_path / ".mlray" / "lake")
    assert spec.platform.tracking_uri == f"sqlite:///{tmp_path / '.mlray' / 'mlflow' / 'mlflow.db'}"
    assert spec.train_table.expectations.max_staleness == timedelta(days=30)
    assert [f.kind for f in spec.features].count("categorical") == 3


def _error(text: str, **kwargs) -> str:
    with pytest.raises(UserError) as caught:
        parse_spec(text, "my.yaml", **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_key_names_file_line_and_key(starter_text):
    message = _error(starter_text.replace("  state_dir: .mlray", "  state_dri: .mlray"))
    assert message.startswith("my.yaml:7: platform.state_dri: unknown key")


def test_wrong_type_says_what_was_expected(starter_text):
    message = _error(starter_text.replace("{type: float, nullable: false, min: 0}", "{type: decimal}"))
    assert "data.tables.transactions.columns.amount.type" in message
    assert "'decimal'" in message and "'float'" in message


def test_label_column_must_be_in_the_schema(starter_text):
    message = _error(starter_text.replace("label_column: is_fraud", "label_column: fraud"))
    assert "label_column 'fraud' is not a column of table 'transactions'" in message


def test_feature_must_read_a_declared_column_of_a_fitting_type(starter_text):
    assert "reads column 'amount_usd'" in _error(starter_text.replace(
        "{name: amount, kind: numeric", "{name: amount, column: amount_usd, kind: numeric"))
    assert "is numeric but column 'country' is string" in _error(starter_text.replace(
        "{name: country, kind: categorical, top_k: 20}", "{name: country, kind: numeric}"))


def test_rules_must_fit_the_column_type(starter_text):
    message = _error(starter_text.replace("country: {type: string, nullable: false}",
                                          "country: {type: string, min: 3}"))
    assert "min/max apply to int and float columns" in message


def test_not_yaml_and_not_a_mapping():
    assert _error("data: [unclosed").startswith("my.yaml:1: not valid YAML")
    assert "expected a mapping of sections" in _error("- a list")


def test_missing_required_sections():
    assert "data: required key is missing" in _error("name: x\n")


def test_environment_overrides_apply_and_errors_name_the_variable(starter_text, tmp_path):
    spec = parse_spec(starter_text, "my.yaml", environ={"MLRAY_PLATFORM__RAY_ADDRESS": "auto",
                                                        "MLRAY_PLATFORM__NUM_CPUS": "3"})
    assert spec.platform.ray_address == "auto" and spec.platform.num_cpus == 3
    message = _error(starter_text, environ={"MLRAY_PLATFORM__NUM_CPUS": "many"})
    assert message.startswith("MLRAY_PLATFORM__NUM_CPUS: platform.num_cpus:")


def test_mlray_home_moves_the_state_folder(starter_text, tmp_path, monkeypatch):
    monkeypatch.setenv("MLRAY_HOME", str(tmp_path / "state"))
    spec = parse_spec(starter_text, "my.yaml")
    assert spec.platform.state_dir == str(tmp_path / "state")


def test_object_store_uris_are_kept(starter_text):
    spec = parse_spec(starter_text.replace("lake_root: null", "lake_root: s3://bucket/lake"), "my.yaml")
    assert spec.platform.lake_uri == "s3://bucket/lake"


def test_column_type_shorthand_and_durations(starter_text):
    spec = parse_spec(starter_text, "my.yaml")
    assert spec.train_table.columns["card_present"].type == "bool"
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_load_spec_reports_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_load_spec_uses_mlray_spec_variable(tmp_path, starter_text, monkeypatch):
    path = tmp_path / "elsewhere.yaml"
    path.write_text(starter_text)
    monkeypatch.setenv("MLRAY_SPEC", str(path))
    assert load_spec().path == Path(path).resolve()


SPACE = """
tune:
  space:
    train.learning_rate: {loguniform: [0.0001, 0.01]}
    model.dropout: {uniform: [0.0, 0.3]}
    model.hidden: {choice: [[64, 64], [128]]}
    train.batch_size: {int: [128, 1024]}
"""


def test_a_search_space_parses_into_dimensions(starter_text):
    spec = parse_spec(starter_text + SPACE, "my.yaml")
    assert spec.tune.dimensions() == {"train.learning_rate": ("loguniform", [0.0001, 0.01]),
                                      "model.dropout": ("uniform", [0.0, 0.3]),
                                      "model.hidden": ("choice", [[64, 64], [128]]),
                                      "train.batch_size": ("int", [128, 1024])}
    assert spec.tune.scheduler.grace_period == 1 and spec.tune.algorithm == "random"


@pytest.mark.parametrize("entry, expected", [
    ("train.learning_rate: {loguniform: [0, 0.01]}", "'train.learning_rate': loguniform needs [low, high] with 0 < low"),
    ("train.learning_rate: {uniform: [0.1, 0.01]}", "uniform needs [low, high] with low < high, got [0.1, 0.01]"),
    ("train.batch_size: {int: [1.5, 8]}", "int needs [low, high] with integers low < high"),
    ("model.dropout: {uniform: [0.0, 1.5]}", "'model.dropout': 1.5 is not a valid model.dropout"),
    ("train.optimizer: {choice: [adam, rmsprop]}", "'rmsprop' is not a valid train.optimizer"),
    ("train.learning_rat: {uniform: [0.1, 0.2]}", "'train.learning_rat' cannot be tuned; tunable keys: model.batch_norm"),
    ("train.num_workers: {choice: [1, 2]}", "'train.num_workers' cannot be tuned"),
    ("model.hidden: {choice: []}", "choice needs a non-empty list"),
    ("model.dropout: 0.2", "'model.dropout': expected one of {uniform|loguniform|int|choice: ...}, got 0.2"),
    ("model.dropout: {normal: [0, 1]}", "expected one of {uniform|loguniform|int|choice: ...}"),
])
def test_a_wrong_search_space_names_the_key_and_what_was_expected(starter_text, entry, expected):
    message = _error(starter_text + f"\ntune:\n  space:\n    {entry}\n")
    assert message.startswith("my.yaml:") and "tune.space: " in message and expected in message


def test_trial_settings_override_the_spec_and_are_revalidated(starter_text):
    from mlray.train.sweep import with_overrides

    spec = parse_spec(starter_text + SPACE, "my.yaml")
    trial = with_overrides(spec, {"train.learning_rate": 0.003, "model.hidden": [128]})
    assert trial.train.learning_rate == 0.003 and trial.model.hidden == [128]
    assert trial.train.epochs == spec.train.epochs and spec.model.hidden == [64, 64]  # the original is untouched


@pytest.mark.parametrize(("written", "rule"), [
    (None, "f1"), ("auto", "f1"), (0.3, 0.3), ({"precision": 0.9}, {"precision": 0.9}), ({"recall": 0.8}, {"recall": 0.8})])
def test_the_threshold_is_chosen_on_validation_unless_fixed(starter_text, written, rule):
    text = starter_text if written is None else f"{starter_text}\ntrain:\n  threshold: {written}\n"
    assert parse_spec(text).train.threshold_rule() == rule


@pytest.mark.parametrize(("written", "expected"), [
    ("{precision: 0.9, recall: 0.8}", "name exactly one of precision or recall"),
    ("{}", "name exactly one of precision or recall"),
    ("1.5", "threshold must lie strictly between 0 and 1, not 1.5"),
    ("{precision: 1.2}", "train.threshold")])
def test_a_wrong_threshold_says_what_was_expected(starter_text, written, expected):
    with pytest.raises(UserError, match=expected):
        parse_spec(f"{starter_text}\ntrain:\n  threshold: {written}\n")
