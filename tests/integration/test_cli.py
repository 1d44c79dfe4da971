"""The CLI, in process, on a data set that is not the demo's: a spec written as a new user would."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

from mlray.cli import app

CHURN_SPEC = """
name: telco-churn
data:
  label_column: churned
  tables:
    customers:
      id_column: customer
      event_time_column: snapshot_at
      expectations: {min_rows: 50}
      columns:
        customer: {type: string, nullable: false}
        snapshot_at: {type: timestamp, nullable: false}
        plan: {type: string, allowed: [basic, plus, premium]}
        monthly_fee: {type: float, min: 0}
        tenure_months: {type: int, min: 0}
        support_calls: int
        auto_pay: bool
        churned: {type: int, allowed: [0, 1]}
features:
  - {name: monthly_fee, kind: numeric, standardize: true}
  - {name: tenure_months, kind: numeric, log1p: true, bucketize: {quantiles: 4}}
  - {name: support_calls, kind: numeric, clip: [0, 10], default: 0}
  - {name: plan, kind: categorical}
  - {name: auto_pay, kind: boolean, default: false}
  - {name: snapshot_at, kind: timestamp, parts: [month]}
"""


def churn_rows(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    now = np.datetime64("now", "s")
    return pa.table({
        "customer": [f"cust-{seed}-{i}" for i in range(n)],
        "snapshot_at": pa.array((now - rng.integers(0, 86400 * 20, n).astype("timedelta64[s]")).astype("datetime64[us]"),
                                pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")),
        "plan": rng.choice(["basic", "plus", "premium"], n),
        "monthly_fee": np.round(rng.uniform(10, 90, n), 2),
        "tenure_months": rng.integers(0, 72, n),
        "support_calls": rng.poisson(1.5, n),
        "auto_pay": rng.random(n) < 0.6,
        "churned": (rng.random(n) < 0.2).astype(int),
    })


@pytest.fixture
def churn(tmp_path):
    spec = tmp_path / "churn.yaml"
    spec.write_text(CHURN_SPEC)
    data = churn_rows(300)
    text = {name: data.column(name).cast(pa.string()).to_pylist() for name in data.column_names}
    text["monthly_fee"][7] = "free"  # one malformed value
    text["plan"][8] = "gold"  # one value outside the allowed set
    pacsv.write_csv(pa.table(text), tmp_path / "customers.csv")
    return spec, tmp_path / "customers.csv"


runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_a_new_data_set_goes_through_every_stage(churn):
    spec, csv = churn
    result = invoke("ingest", csv, "--table", "customers", "--spec", spec, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["rows_read"], report["rows_landed"], report["rows_quarantined"]) == (300, 298, 2)

    result = invoke("validate", "--spec", spec, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["passed"] is True

    result = invoke("features", "fit", "--spec", spec, "--json")
    assert result.exit_code == 0, result.output
    fitted = json.loads(result.stdout)
    assert fitted["lineage"]["table"] == "customers" and fitted["lineage"]["rows"] == 298
    plan = next(f for f in fitted["features"] if f["name"] == "plan")
    assert sorted(plan["vocabulary"]) == ["basic", "plus", "premium"]

    shown = invoke("features", "show", "--spec", spec)
    assert shown.exit_code == 0 and fitted["feature_version"] in shown.stdout

    listed = json.loads(invoke("tables", "list", "--spec", spec, "--json").stdout)
    assert {t["name"]: t["rows"] for t in listed} == {"customers": 298, "customers_quarantine": 2}
    history = json.loads(invoke("tables", "history", "customers", "--spec", spec, "--json").stdout)
    assert history[0]["source"] == str(csv) and history[0]["rows_added"] == 298
    rows = json.loads(invoke("tables", "show", "customers_quarantine", "--spec", spec, "--json").stdout)["rows"]
    assert sorted(r["_reason"] for r in rows) == ["monthly_fee: 'free' is not a number",
                                                  "plan: 'gold' is not an allowed value"]

    again = json.loads(invoke("ingest", csv, "--table", "customers", "--spec", spec, "--json").stdout)
    assert again["rows_landed"] == 0 and again["files"][0]["status"] == "skipped"


def test_human_output_and_failing_validation(churn, tmp_path):
    spec, csv = churn
    result = invoke("ingest", csv, "--table", "customers", "--spec", spec)
    assert result.exit_code == 0 and "rows quarantined" in result.stdout and "customers_quarantine" in result.stdout
    strict = tmp_path / "strict.yaml"
    strict.write_text(CHURN_SPEC.replace("min_rows: 50", "min_rows: 100000"))
    result = invoke("validate", "--spec", strict)
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and "rows" in result.stdout


def test_user_errors_exit_2_with_one_line_and_no_traceback(churn, tmp_path):
    spec, csv = churn
    bad = tmp_path / "bad.yaml"
    bad.write_text(CHURN_SPEC.replace("monthly_fee: {type: float, min: 0}", "monthly_fee: {type: float, mni: 0}"))
    result = invoke("validate", "--spec", bad)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.yaml:14: data.tables.customers.columns.monthly_fee.mni: unknown key" in lines[0]

    result = invoke("ingest", tmp_path / "missing.csv", "--table", "customers", "--spec", spec)
    assert result.exit_code == 2 and "no such file or folder" in result.stderr
    result = invoke("tables", "history", "nothing_here", "--spec", spec)
    assert result.exit_code == 2 and "does not exist" in result.stderr
