"""The closed loop, end to end, on the embedded Ray: a champion serves over HTTP → drifted traffic with labels arrives →
the monitor detects the drift → exactly one retraining job runs through the Jobs API → it registers a challenger →
the canary promotes it → the new champion serves. Asserted step by step from the incidents table, the Jobs API, the
registry aliases and the audit log."""

import json

import numpy as np
import pytest
import requests
from helpers import TRAINED, Background, free_port, wait_until

from mlray import dataplane
from mlray.lake.schema import arrow_schema
from mlray.lake.synthetic import Shift, generate_transactions, write_source_file
from mlray.spec import load_spec, starter_spec

KEY = "closed-loop-key"
ROWS_PER_REQUEST = 10


def project(folder, landing):
    from mlray.serve.auth import hash_key

    text = starter_spec("closed-loop").replace("min_rows: 1000", "min_rows: 10") + TRAINED + "  gate: {tolerance: 0.05}\n" + f"""
serve:
  port: {free_port()}
  log_flush_s: 0.5
  api_keys: ['{hash_key(KEY)}']
rollout:
  steps: [50, 100]
  interval: 4s
  min_requests: 30
  checks: {{max_divergence: 10, max_p99_latency_ratio: 5, max_metric_drop: 0.5}}
monitor:
  enabled: true
  window_rows: 400
  min_window_rows: 100
  window: 1h
  poll_interval: 0.5s
  retrain: {{drifted_windows: 2, of_windows: 3, cooldown: 1h, source: '{landing}', window: 3d}}
"""
    (folder / "mlray.yaml").write_text(text)
    spec = load_spec(folder / "mlray.yaml")
    dataplane.lake_of(spec).append("transactions", generate_transactions(20000, seed=5), batch_id="seed-5",
                                   schema=arrow_schema(spec.train_table))
    return spec


class Load(Background):
    """Requests of ROWS_PER_REQUEST rows from a background thread, each answered row's true label sent as feedback."""

    def __init__(self, url: str, shift: Shift):
        super().__init__(pause=0.05)
        self.url, self.shift, self.seed = url, shift, 1000
        self.versions, self.failures = [], 0
        self.headers = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}

    def run_once(self):
        self.seed += 1
        table = generate_transactions(ROWS_PER_REQUEST, seed=self.seed, shift=self.shift, id_prefix=f"l{self.seed}")
        table = table.take(np.random.default_rng(self.seed).permutation(ROWS_PER_REQUEST))
        rows = json.loads(table.drop_columns(["is_fraud"]).to_pandas().to_json(orient="records", date_format="iso"))
        response = requests.post(f"{self.url}/v1/predict", data=json.dumps({"rows": rows}), headers=self.headers,
                                 timeout=30)
        if response.status_code != 200:
            self.failures += 1
            return
        body = response.json()
        self.versions.append(body["model_version"])
        feedback = {"request_id": body["request_id"], "label": table.column("is_fraud")[0].as_py()}
        requests.post(f"{self.url}/v1/feedback", data=json.dumps(feedback), headers=self.headers, timeout=30)


@pytest.mark.slow
def test_drift_retrains_and_the_canary_promotes_the_new_model(tmp_path):
    import ray
    from ray import serve

    from mlray.audit import AuditLog
    from mlray.monitor import actor, jobs
    from mlray.monitor.incidents import Incidents
    from mlray.monitor.reports import read_reports
    from mlray.registry.models import Registry
    from mlray.serve.auth import KeyRing
    from mlray.serve.control import NAMESPACE, actor_name
    from mlray.serve.deploy import deploy
    from mlray.train.run import train_model

    landing = tmp_path / "landing"
    spec = project(tmp_path, landing)
    lake, registry = dataplane.lake_of(spec), Registry(spec)
    assert train_model(spec).decision == "champion"
    url = deploy(spec, keys=KeyRing.for_serving(spec.serve)).url
    actor.start(spec)
    try:
        # 1. the champion serves in-distribution traffic: windows are checked and pass
        with Load(url, Shift()) as calm:
            assert wait_until(lambda: len(read_reports(lake)) >= 2, timeout=120), read_reports(lake)
        assert calm.failures == 0 and set(calm.versions) == {"1"}
        incidents = Incidents(lake)
        assert incidents.all() == []

        # 2. the world moves: new files land upstream and traffic drifts
        recent = generate_transactions(12000, seed=77, shift=Shift(covariate=1.0), days=2, id_prefix="recent")
        write_source_file(recent, landing / "recent.parquet")
        with Load(url, Shift(covariate=1.0)) as drifted:
            opened = wait_until(incidents.all, timeout=180)
            assert opened and opened[0]["cause"] == "drift", read_reports(lake)
            incident = opened[0]["incident_id"]
            outcome = wait_until(lambda: incidents.get(incident)["status"] in ("promoted", "rolled_back", "rejected",
                                                                               "failed", "unfinished"), timeout=600,
                               every=2)
            final = incidents.get(incident)
            assert outcome and final["status"] == "promoted", final
            challenger = final["challenger"]
            assert wait_until(lambda: drifted.versions[-20:].count(challenger) == 20, timeout=60)

        # 3. step by step: incident events, the one job, the aliases, the audit trail
        assert [e["status"] for e in final["events"]] == ["open", "submitted", "running", "retrained", "promoted"]
        assert [i["incident_id"] for i in incidents.all()] == [incident], "one incident, however many windows drifted"
        def jobs_of_incident():
            return [j for j in jobs.client().list_jobs() if (j.metadata or {}).get("mlray.incident") == incident]

        assert wait_until(lambda: all(j.status.value == "SUCCEEDED" for j in jobs_of_incident()), timeout=60)
        mine = jobs_of_incident()  # the job records the outcome, then exits
        assert len(mine) == 1 and mine[0].submission_id == final["job_id"]
        assert registry.version_of("champion") == challenger != "1" and registry.version_of("previous") == "1"
        run = registry.client.get_run(registry.client.get_model_version(spec.name, challenger).run_id)
        assert run.data.tags["mlray.incident"] == incident
        assert int(run.data.tags["mlray.table_version"]) > 1  # the landed files were trained on
        actions = [e["action"] for e in reversed(AuditLog(spec.platform).read())]
        loop = ["incident.open", "retrain.submit", "retrain.running", "retrain.retrained", "canary.start",
                "canary.promote", "retrain.promoted"]
        assert [a for a in actions if a in loop] == loop
        assert drifted.failures == 0
    finally:
        actor.stop(spec)
        serve.shutdown()  # first: a live ingress would start its project's control plane again
        for name in (actor_name(spec.name), f"{spec.name}-rollout-controller"):
            try:
                ray.kill(ray.get_actor(name, namespace=NAMESPACE))
            except ValueError:
                pass
