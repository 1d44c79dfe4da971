"""Drift-monitor benchmark: the check inside the monitor actor against Alibi Detect called directly, detection delay
per shift type, and inference-log / label write throughput against plain deltalake appends.

Three parts, all in one run, on one small champion with 20 monitored input columns (the starter spec's 9 and 11 more
derived from the generator's columns with noise, declared in the spec; 8 epochs of 256 rows, as the usual
small run of 2 epochs of 512 leaves it near chance (test ROC-AUC 0.77), too weak for a prior shift to move its
scores; trained once, cached under benchmarks/.cache/drift):

1. check: windows of 1,000 and 10,000 served rows, each written the way the ingress writes it (`InferenceLog`, one
   flush per window) and closed by a `DriftMonitor` actor through `call("step")`. mlray's number is the check's own
   duration inside the actor (the `seconds` the monitor stores in each `drift_reports` row: the window's inputs
   flattened and encoded, `TabularDrift` and `KSDrift`); the reference is `TabularDrift(...).predict` +
   `KSDrift(...).predict` on the same reference, built once in this process and called on the same rows already
   encoded. Also shown: `Detectors.check` in this process (no actor), and the actor's whole step per window (read the
   rows, check, report, checkpoint; timed around `ray.get`), informational. Medians over the windows after a warm-up.
2. delay: an in-process `Monitor` over in-distribution windows, then windows shifted with the generator's
   `Shift(covariate=1)`, `Shift(prior=1)`, `Shift(concept=1)` (the last with half of the rows labelled); the shifted
   window that first has verdict 'drift' (covariate, prior; prior also by score drift) or a live quality drop above
   `monitor.retrain.max_quality_drop` (concept), 1 being the first shifted window; and the window after which the
   retraining policy opened an incident (`retrain.mode: approval`: no job is submitted).
3. writes: `InferenceLog.record` + `flush` and `LabelLog.add` + `flush` (flushes of 1,000 rows) against one
   `deltalake.write_deltalake(..., mode="append")` per flush of the same rows as one Arrow table; and labels/s before
   (one Delta commit per label with an application transaction, as `append_label` did) and after (`LabelLog`).

    python -m benchmarks.drift --window-rows 1000 10000 --windows 7
    python -m benchmarks.drift --only writes        # one part (results/drift-writes.json; Ray only to train)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
import uuid
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from benchmarks.common import CACHE, machine, print_table, start_ray, write_result
from mlray import dataplane
from mlray.lake import Lake
from mlray.lake.inference import LABELS_SCHEMA
from mlray.lake.schema import arrow_schema
from mlray.lake.synthetic import RISKY_CATEGORIES, RISKY_COUNTRIES, Shift, generate_transactions
from mlray.serve.logbook import InferenceLog, LabelLog, create_tables, log_schema
from mlray.serve.schema import label_text
from mlray.spec import ProjectSpec, load_spec, starter_spec

HOME = CACHE / "drift"
TRAIN_ROWS = 20_000
PER_CALL = 50  # rows per logged scoring call
FLUSH_ROWS = 1_000  # rows per flush in the write part
DELAY_WINDOW = 1_000  # rows per window in the delay part
EXTRA_COLUMNS = """\
        amount_usd: {type: float, min: 0}
        amount_7d_avg: {type: float, min: 0}
        distance_km: {type: float, min: 0}
        merchant_risk: float
        session_seconds: {type: float, min: 0}
        ip_risk: float
        tx_count_7d: {type: int, min: 0}
        failed_logins_24h: {type: int, min: 0}
        channel: string
        region: string
        three_ds: bool
"""
EXTRA_FEATURES = """\
  - {name: amount_usd, kind: numeric, log1p: true}
  - {name: amount_7d_avg, kind: numeric, log1p: true}
  - {name: distance_km, kind: numeric, log1p: true}
  - {name: merchant_risk, kind: numeric}
  - {name: session_seconds, kind: numeric, log1p: true}
  - {name: ip_risk, kind: numeric}
  - {name: tx_count_7d, kind: numeric, log1p: true, default: 0}
  - {name: failed_logins_24h, kind: numeric, default: 0}
  - {name: channel, kind: categorical, default: unknown}
  - {name: region, kind: categorical, default: unknown}
  - {name: three_ds, kind: boolean, default: false}
"""
TRAIN = """
train:
  num_workers: 1
  cpus_per_worker: 1
  epochs: 8
  batch_size: 256
  early_stopping: null
"""
MONITOR = f"""
monitor:
  window_rows: {DELAY_WINDOW}
  min_window_rows: 100
  window: 1h
  poll_interval: 1h
  retrain: {{mode: approval}}
"""
REGIONS = {"US": "americas", "CA": "americas", "BR": "americas", "MX": "americas", "GB": "europe", "DE": "europe",
           "FR": "europe", "ES": "europe", "IT": "europe", "NL": "europe", "RU": "europe", "IN": "asia", "CN": "asia",
           "JP": "asia", "AU": "oceania", "NG": "africa"}


# ---------------------------------------------------------------------- project, champion, traffic

def project() -> ProjectSpec:
    """The starter spec with 11 more input columns (20 monitored in all), a small training run and the monitor."""
    HOME.mkdir(parents=True, exist_ok=True)
    text = starter_spec()
    label_line = "        is_fraud: {type: bool, nullable: false}\n"
    time_feature = "  - {name: event_time, kind: timestamp, parts: [hour, weekday]}\n"
    assert label_line in text and time_feature in text, "the starter spec changed: update benchmarks/drift.py"
    text = text.replace(label_line, EXTRA_COLUMNS + label_line).replace(time_feature, time_feature + EXTRA_FEATURES)
    path = HOME / "mlray.yaml"
    path.write_text(text + TRAIN + MONITOR)
    return load_spec(path)


def widen(table: pa.Table, seed: int, schema: pa.Schema) -> pa.Table:
    """The generator's rows with the 11 extra columns: functions of its columns plus noise (so a covariate shift
    moves most of them), in the train table's column order."""
    rng = np.random.default_rng(seed + 7919)
    n = table.num_rows
    amount = table.column("amount").to_numpy()
    device = np.asarray(table.column("device").to_pylist(), dtype=object)
    country = np.asarray(table.column("country").to_pylist(), dtype=object)
    category = np.asarray(table.column("merchant_category").to_pylist(), dtype=object)
    online = np.isin(device, ["mobile", "desktop"])
    channel = np.where(device == "atm", "atm", np.where(online, np.where(device == "mobile", "app", "web"), "terminal"))
    channel = np.where(rng.random(n) < 0.03, rng.choice(["app", "web", "terminal", "atm"], n), channel)
    extra = {
        "amount_usd": pa.array(np.round(amount * rng.normal(1.0, 0.02, n).clip(0.9, 1.1), 2), pa.float64()),
        "amount_7d_avg": pa.array(amount * np.exp(rng.normal(0.0, 0.5, n)), pa.float64()),
        "distance_km": pa.array(rng.gamma(1.5, 1.0, n) * np.where(country == "US", 20.0, 800.0), pa.float64()),
        "merchant_risk": pa.array(0.5 * np.isin(category, list(RISKY_CATEGORIES)) + rng.beta(2, 8, n), pa.float64()),
        "session_seconds": pa.array(rng.gamma(2.0, np.where(online, 90.0, 10.0)), pa.float64()),
        "ip_risk": pa.array(rng.beta(1.5, 12, n) + 0.2 * np.isin(country, list(RISKY_COUNTRIES)), pa.float64()),
        "tx_count_7d": pa.array(3 * table.column("tx_count_24h").to_numpy() + rng.poisson(4, n), pa.int64()),
        "failed_logins_24h": pa.array(rng.poisson(0.1 + 0.4 * online), pa.int64()),
        "channel": pa.array(channel.astype(str), pa.string()),
        "region": pa.array([REGIONS.get(c, "other") for c in country], pa.string()),
        "three_ds": pa.array(online & (rng.random(n) < 0.7), pa.bool_()),
    }
    columns = {name: table.column(name) for name in table.column_names} | extra
    return pa.table({name: columns[name] for name in schema.names}, schema=schema)


def ensure_champion(spec: ProjectSpec) -> str:
    """The champion of the benchmark's project: trained once on TRAIN_ROWS rows, then cached in HOME."""
    from mlray.registry.models import Registry
    from mlray.training import train as train_and_admit

    version = Registry(spec).version_of("champion")
    if version is not None:
        return version
    lake, schema = dataplane.lake_of(spec), arrow_schema(spec.train_table)
    shutil.rmtree(lake.uri(spec.data.train_table), ignore_errors=True)
    lake.append(spec.data.train_table, widen(generate_transactions(TRAIN_ROWS, seed=5), 5, schema), batch_id="train",
                schema=schema)
    print(f"training a small model on {TRAIN_ROWS:,} rows, 20 monitored columns (once; cached in {HOME})", flush=True)
    outcome = train_and_admit(spec)
    assert outcome.decision == "champion", outcome
    return outcome.model_version


def fresh(spec: ProjectSpec, name: str, **monitor) -> ProjectSpec:
    """The project with an empty lake of its own (HOME/lakes/<name>) for serving's tables and the monitor's state,
    and `monitor` settings changed; the registry (and so the champion) stays."""
    root = HOME / "lakes" / name
    shutil.rmtree(root, ignore_errors=True)
    platform = spec.platform.model_copy(update={"lake_root": str(root)})
    out = spec.model_copy(update={"platform": platform, "monitor": spec.monitor.model_copy(update=monitor)})
    dataplane.lake_of(out).create(spec.data.train_table, arrow_schema(spec.train_table))
    return out


class Traffic:
    """Served traffic written the way the ingress writes it (its `InferenceLog` and `LabelLog`), scored by the
    champion package (as tests/integration/traffic.py, with the benchmark's extra columns)."""

    def __init__(self, spec: ProjectSpec, version: str, package):
        self.spec, self.version, self.package = spec, version, package
        self.lake = dataplane.lake_of(spec)
        create_tables(spec, self.lake)
        self.schema = arrow_schema(spec.train_table)
        self.log = InferenceLog(self.lake, spec.serve.inference_log_table, log_schema(spec))
        self.labels = LabelLog(self.lake, spec.serve.labels_table)

    def send(self, rows: int, seed: int, shift: Shift = Shift(), labelled: float = 0.0) -> tuple[pa.Table, np.ndarray]:
        """Score `rows` fresh transactions in calls of PER_CALL rows, log them in one flush (one commit), send the
        true label of the first `labelled` share of each call's rows; returns the rows as served and their scores."""
        inputs, truth, answers = scored(self.spec, self.package, rows, seed, shift, self.schema)
        for start in range(0, rows, PER_CALL):
            request_id = uuid.uuid4().hex
            call = inputs.slice(start, PER_CALL).to_pylist()  # the ingress's validated rows: one dict each
            self.log.record(request_id, self.version, call, answers[start:start + PER_CALL], latency_ms=2.0)
            for row in range(int(len(call) * labelled)):
                self.labels.add(request_id, row, label_text(truth[start + row]))
        self.labels.flush()
        assert self.log.flush() == rows
        return inputs, np.array([a["score"] for a in answers], dtype=float)


def scored(spec: ProjectSpec, package, rows: int, seed: int, shift: Shift, schema: pa.Schema):
    """Fresh rows in no particular order (the generator sorts by time; a window of neighbours would show seasonality),
    the label nulled, and the champion's answers: (inputs, true labels, answers)."""
    from mlray.registry.package import predict_frame

    table = widen(generate_transactions(rows, seed=seed, shift=shift, id_prefix=f"live{seed}"), seed, schema)
    table = table.take(np.random.default_rng(seed).permutation(rows))
    label = spec.data.label_column
    truth = table.column(label).to_pylist()
    inputs = table.set_column(table.schema.get_field_index(label), label, pa.nulls(rows, table.schema.field(label).type))
    answers = predict_frame(package.net, package.config, package.fitted, inputs).to_dict("records")
    return inputs, truth, answers


# ---------------------------------------------------------------------- 1. the check: actor against Alibi directly

def check_latency(spec: ProjectSpec, version: str, package, window_rows: int, windows: int) -> dict:
    import ray
    from alibi_detect.cd import KSDrift, TabularDrift

    from mlray.monitor.actor import DriftMonitor
    from mlray.monitor.detectors import Detectors
    from mlray.monitor.reference import load_reference
    from mlray.window_reports import read_reports

    watched = fresh(spec, f"check{window_rows}", window_rows=window_rows, min_window_rows=min(100, window_rows))
    traffic = Traffic(watched, version, package)
    # the actor without actor.start(): that one asks the cluster for the dashboard's address (the Jobs API) at once,
    # and this Ray runs no dashboard; with `retrain.mode: approval` no job is ever submitted
    handle = DriftMonitor.remote(watched, None)
    ray.get(handle.call.remote("status"))
    reference = load_reference(watched, version)  # the same reference the actor builds, built here
    rules = watched.monitor
    tabular = TabularDrift(reference.x_ref, p_val=rules.p_value, categories_per_feature=reference.categories_per_feature,
                           correction=rules.correction)
    ks = KSDrift(reference.scores.reshape(-1, 1), p_val=rules.p_value)
    detectors = Detectors(reference, rules)
    steps, direct, in_process, p_values = [], [], [], []
    try:
        for w in range(windows + 1):  # window 0 warms up (the actor builds its reference then)
            inputs, scores = traffic.send(window_rows, seed=10_000 + 100 * w + window_rows % 97)
            started = time.perf_counter()
            closed = ray.get(handle.call.remote("step"))["windows"]
            steps.append(time.perf_counter() - started)
            assert [c["rows"] for c in closed] == [window_rows], closed
            x, s = reference.encode(inputs), scores.reshape(-1, 1)
            started = time.perf_counter()
            found = tabular.predict(x, drift_type="feature")["data"]
            ks.predict(s)
            direct.append(time.perf_counter() - started)
            p_values.append(np.asarray(found["p_val"], dtype=float))
            started = time.perf_counter()
            detectors.check(inputs, scores)
            in_process.append(time.perf_counter() - started)
    finally:
        ray.kill(handle, no_restart=True)
    reports = sorted(read_reports(traffic.lake), key=lambda r: r.seq)
    assert [r.seq for r in reports] == list(range(windows + 1)), [r.seq for r in reports]
    actor = [r.seconds for r in reports]
    same = all(np.allclose(r.p_values, p, rtol=1e-9, atol=1e-12) for r, p in zip(reports, p_values))
    med = {k: statistics.median(v[1:]) for k, v in
           {"actor": actor, "direct": direct, "in_process": in_process, "step": steps}.items()}
    entry = {
        "part": "check", "window_rows": window_rows, "features": len(reference.columns), "windows": windows,
        "columns": reference.columns, "reference_rows": int(reference.x_ref.shape[0]),
        "actor_check_ms": 1e3 * med["actor"], "direct_alibi_ms": 1e3 * med["direct"],
        "in_process_check_ms": 1e3 * med["in_process"], "actor_step_ms": 1e3 * med["step"],
        "ratio": med["actor"] / med["direct"], "in_process_ratio": med["in_process"] / med["direct"],
        "same_p_values": same, "warmup_step_ms": 1e3 * steps[0],
        "runs_ms": {"actor_check": [1e3 * v for v in actor], "direct_alibi": [1e3 * v for v in direct],
                    "in_process_check": [1e3 * v for v in in_process], "actor_step": [1e3 * v for v in steps]},
    }
    entry["summary"] = (f"check {window_rows:,} rows × {entry['features']} cols: actor {entry['actor_check_ms']:.1f} ms vs "
                        f"Alibi direct {entry['direct_alibi_ms']:.1f} ms = {entry['ratio']:.2f}× (step "
                        f"{entry['actor_step_ms']:.0f} ms/window)")
    print(f"{window_rows:>7,} rows/window: actor check {entry['actor_check_ms']:.1f} ms, in process "
          f"{entry['in_process_check_ms']:.1f} ms, Alibi direct {entry['direct_alibi_ms']:.1f} ms → {entry['ratio']:.2f}×; "
          f"actor step {entry['actor_step_ms']:.0f} ms/window (warm-up {entry['warmup_step_ms']:.0f} ms); "
          f"same p-values: {same}", flush=True)
    return entry


# ---------------------------------------------------------------------- 2. detection delay

SHIFTS = {"covariate": Shift(covariate=1.0), "prior": Shift(prior=1.0), "concept": Shift(concept=1.0)}


def delay(spec: ProjectSpec, version: str, package, name: str, before: int, after: int) -> dict:
    from mlray.control.state import WindowVerdict
    from mlray.incidents import Incidents
    from mlray.monitor.watch import Monitor
    from mlray.window_reports import read_reports

    watched = fresh(spec, f"delay-{name}", window_rows=DELAY_WINDOW)
    monitor, traffic = Monitor(watched), Traffic(watched, version, package)
    monitor.status()  # writes its checkpoint: it watches the traffic sent from here on
    labelled = 0.5 if name == "concept" else 0.0
    started = time.perf_counter()
    for w in range(before + after):
        traffic.send(DELAY_WINDOW, seed=20_000 + 100 * w + len(name), shift=SHIFTS[name] if w >= before else Shift(),
                     labelled=labelled)
        assert len(monitor.step()["windows"]) == 1
    seconds = time.perf_counter() - started
    reports = sorted(read_reports(traffic.lake), key=lambda r: r.seq)
    max_drop = watched.monitor.retrain.max_quality_drop

    def first(hit) -> int | None:
        return next((i + 1 for i, r in enumerate(reports[before:]) if hit(r)), None)

    drifted = first(lambda r: r.verdict == WindowVerdict.DRIFT)
    score = first(lambda r: r.score_drift)
    quality = first(lambda r: r.quality_drop is not None and r.quality_drop > max_drop)
    detected = quality if name == "concept" else drifted
    incidents = [{"cause": i.cause, "window": int(i.incident_id.rsplit("-w", 1)[1]) - before + 1}
                 for i in sorted(Incidents(traffic.lake).all(), key=lambda i: i.opened)]
    after_onset = [i["window"] for i in incidents if i["window"] >= 1]
    incident_after = after_onset[0] if after_onset else None
    drops = [None if r.quality_drop is None else round(r.quality_drop, 3) for r in reports]
    entry = {
        "part": "delay", "shift": name, "window_rows": DELAY_WINDOW, "windows_before": before, "windows_after": after,
        "labelled": labelled, "detected_in_window": detected, "drift_verdict_in_window": drifted,
        "score_drift_in_window": score, "quality_drop_in_window": quality, "incident_after_window": incident_after,
        "incidents": incidents, "quality_drops": drops,
        "false_alarms_before": sum(r.verdict == WindowVerdict.DRIFT for r in reports[:before]),
        "false_quality_alarms_before": sum(d is not None and d > max_drop for d in drops[:before]),
        "incidents_before": sum(i["window"] < 1 for i in incidents),
        "windows": [r.model_dump(mode="json", include={"seq", "verdict", "drifted", "score_drift", "score_p_value",
                                                       "quality_drop"}) for r in reports],
        "seconds": seconds,
    }
    how = "quality drop" if name == "concept" else "drift verdict"
    entry["summary"] = f"{name}: {how} in shifted window {_window(detected)}, incident after {_incident(entry)}"
    print(f"{name:>9} shift: {how} in shifted window {_window(detected)} (score drift {_window(score)}, drift verdict "
          f"{_window(drifted)}, quality drop > {max_drop:g} {_window(quality)}), incident after shifted window "
          f"{_incident(entry)}; {entry['false_alarms_before']} false alarm(s) in {before} windows before; "
          f"incidents before the onset: {entry['incidents_before']}; quality drops {drops}; {seconds:.1f} s", flush=True)
    return entry


def _window(value: int | None) -> str:
    return "-" if value is None else str(value)


def _incident(entry: dict) -> str:
    """The shifted window after which an incident opened; one opened before the onset (a false alarm) stays open
    and holds back any other."""
    before = [i for i in entry["incidents"] if i["window"] < 1]
    if before:
        found = before[0]
        return (f"- (a {found['cause']} incident opened before the onset, in-distribution window "
                f"{entry['windows_before'] + found['window']} of {entry['windows_before']})")
    return _window(entry["incident_after_window"])


# ---------------------------------------------------------------------- 3. writes

def append_label(lake: Lake, table: str, request_id: str, row: int, label) -> bool:
    """What the feedback endpoint did before `LabelLog`: one Delta commit per label, with its application transaction."""
    data = pa.Table.from_pylist([{"request_id": request_id, "row": row, "label": label,
                                  "at": datetime.now(timezone.utc)}], schema=LABELS_SCHEMA)
    return lake.append(table, data, batch_id=f"feedback:{request_id}:{row}", schema=LABELS_SCHEMA).committed


def writes(spec: ProjectSpec, version: str, package, rows: int, labels_before: int) -> list[dict]:
    from deltalake import write_deltalake

    root = HOME / "lakes" / "writes"
    shutil.rmtree(root, ignore_errors=True)
    lake, schema = Lake(str(root)), log_schema(spec)
    inputs, truth, answers = scored(spec, package, rows, 30_000, Shift(), arrow_schema(spec.train_table))
    calls = [(uuid.uuid4().hex, inputs.slice(s, PER_CALL).to_pylist(), answers[s:s + PER_CALL])
             for s in range(0, rows, PER_CALL)]  # as the ingress has them: validated rows and answers, dicts
    per_flush = FLUSH_ROWS // PER_CALL
    flushes = [calls[i:i + per_flush] for i in range(0, len(calls), per_flush)]
    for name, kind in (("log_mlray", schema), ("log_plain", schema), ("labels_mlray", LABELS_SCHEMA),
                       ("labels_plain", LABELS_SCHEMA), ("labels_before", LABELS_SCHEMA)):
        lake.create(name, kind)  # the same tables (change data feed on) for both sides, created before the clock

    # the rows each flush of the plain side appends: what the log builds from the same calls, built before the clock
    builder = InferenceLog(lake, "log_plain", schema)
    plain_log, build_s = [], 0.0
    for flush in flushes:
        started = time.perf_counter()
        for request_id, call, answer in flush:
            builder.record(request_id, version, call, answer, latency_ms=2.0)
        plain_log.append(builder.rows_of(list(builder.pending)))
        build_s += time.perf_counter() - started
        builder.pending.clear()
        builder.pending_rows = 0
    log = InferenceLog(lake, "log_mlray", schema)
    started = time.perf_counter()
    for flush in flushes:
        for request_id, call, answer in flush:
            log.record(request_id, version, call, answer, latency_ms=2.0)
        log.flush()
    log_s = time.perf_counter() - started
    started = time.perf_counter()
    for table in plain_log:
        write_deltalake(lake.uri("log_plain"), table, mode="append")
    plain_log_s = time.perf_counter() - started

    keys = [(request_id, row, label_text(truth[i * PER_CALL + row])) for i, (request_id, call, _) in enumerate(calls)
            for row in range(len(call))]  # the label as the feedback endpoint passes it: its text
    label_flushes = [keys[i:i + FLUSH_ROWS] for i in range(0, len(keys), FLUSH_ROWS)]
    now = datetime.now(timezone.utc)
    plain_labels = [pa.Table.from_pylist([{"request_id": r, "row": i, "label": v, "at": now} for r, i, v in chunk],
                                         schema=LABELS_SCHEMA) for chunk in label_flushes]
    labels = LabelLog(lake, "labels_mlray")
    started = time.perf_counter()
    for chunk in label_flushes:
        for request_id, row, value in chunk:
            labels.add(request_id, row, value)
        labels.flush()
    labels_s = time.perf_counter() - started
    started = time.perf_counter()
    for table in plain_labels:
        write_deltalake(lake.uri("labels_plain"), table, mode="append")
    plain_labels_s = time.perf_counter() - started
    started = time.perf_counter()
    for request_id, row, value in keys[:labels_before]:
        assert append_label(lake, "labels_before", request_id, row, value)
    before_s = time.perf_counter() - started
    assert lake.latest_version("log_mlray") == len(flushes)  # one commit per flush
    for name, count in (("log_mlray", rows), ("log_plain", rows), ("labels_mlray", rows), ("labels_plain", rows),
                        ("labels_before", labels_before)):
        assert lake.read(name, columns=["row"]).num_rows == count, name

    log_entry = {"part": "inference_log", "rows": rows, "flush_rows": FLUSH_ROWS, "rows_per_call": PER_CALL,
                 "mlray_rows_per_s": rows / log_s, "reference_rows_per_s": rows / plain_log_s,
                 "mlray_s": log_s, "reference_s": plain_log_s, "ratio": plain_log_s / log_s,
                 "record_and_build_rows_s": build_s, "ratio_without_building_rows": plain_log_s / (log_s - build_s)}
    label_entry = {"part": "labels", "rows": rows, "flush_rows": FLUSH_ROWS,
                   "mlray_rows_per_s": rows / labels_s, "reference_rows_per_s": rows / plain_labels_s,
                   "mlray_s": labels_s, "reference_s": plain_labels_s, "ratio": plain_labels_s / labels_s}
    gain = {"part": "labels_before_after", "before_labels": labels_before, "before_s": before_s, "after_labels": rows,
            "before_labels_per_s": labels_before / before_s, "after_labels_per_s": rows / labels_s,
            "ratio": (rows / labels_s) / (labels_before / before_s)}
    log_entry["summary"] = (f"inference log {rows:,} rows: {log_entry['mlray_rows_per_s']:,.0f} rows/s = "
                            f"{log_entry['ratio']:.2f}× write_deltalake")
    label_entry["summary"] = (f"labels {rows:,}: {label_entry['mlray_rows_per_s']:,.0f} rows/s = "
                              f"{label_entry['ratio']:.2f}× write_deltalake")
    gain["summary"] = (f"labels/s {gain['before_labels_per_s']:,.1f} before → {gain['after_labels_per_s']:,.0f} after = "
                       f"{gain['ratio']:,.0f}×")
    print(f"inference log: {log_entry['mlray_rows_per_s']:,.0f} rows/s vs write_deltalake "
          f"{log_entry['reference_rows_per_s']:,.0f} ({log_entry['ratio']:.2f}×; record + building the rows {build_s:.2f} s of "
          f"{log_s:.2f} s, {log_entry['ratio_without_building_rows']:.2f}× without it); labels: "
          f"{label_entry['mlray_rows_per_s']:,.0f} vs {label_entry['reference_rows_per_s']:,.0f} ({label_entry['ratio']:.2f}×); "
          f"one commit per label: {gain['before_labels_per_s']:,.1f} labels/s ({labels_before} labels)", flush=True)
    return [log_entry, label_entry, gain]


# ---------------------------------------------------------------------- the run

PARTS = ("check", "delay", "writes")


def run(window_rows: list[int], windows: int, before: int, after: int, rows: int, labels_before: int,
        num_cpus: int | None, parts: tuple[str, ...] = PARTS) -> dict:
    import ray

    from mlray.registry.models import Registry
    from mlray.registry.package import load_package

    started = time.perf_counter()
    spec = project()
    if parts != ("writes",) or Registry(spec).version_of("champion") is None:  # the writes need no Ray once trained
        start_ray(num_cpus)
    version = ensure_champion(spec)
    package = load_package(Registry(spec).uri(version))
    ready = time.perf_counter()
    results = []
    try:
        for size in window_rows if "check" in parts else []:
            results.append(check_latency(spec, version, package, size, windows))
        for name in SHIFTS if "delay" in parts else []:
            results.append(delay(spec, version, package, name, before, after))
        if "writes" in parts:
            results.extend(writes(spec, version, package, rows, labels_before))
    finally:
        ray.shutdown()
        shutil.rmtree(HOME / "lakes", ignore_errors=True)
    return {"benchmark": "drift", "parts": list(parts), "ray_num_cpus": num_cpus, "model_version": version, "machine": machine(),
            "features": "20 monitored input columns: the starter spec's 9 and 11 derived ones declared in the "
                        "benchmark's spec (a real train table and champion, not a hand-made Reference)",
            "setup_s": ready - started, "seconds": time.perf_counter() - started,
            "goal": "check in the actor ≤ 1.2× Alibi called directly; shifts seen within a few windows; buffered "
                    "log and label writes near plain write_deltalake",
            "results": results}


def report(result: dict) -> None:
    entries, parts = result["results"], result.get("parts", PARTS)
    if "check" in parts:
        print_table("drift check per window: Detectors.check inside the DriftMonitor actor (drift_reports.seconds) vs "
                    "Alibi TabularDrift + KSDrift called directly (medians, ms)",
                    ["rows", "cols", "actor check", "in process", "Alibi direct", "actor/direct", "actor step"],
                    [[f"{e['window_rows']:,}", str(e["features"]), f"{e['actor_check_ms']:.1f}",
                      f"{e['in_process_check_ms']:.1f}", f"{e['direct_alibi_ms']:.1f}", f"{e['ratio']:.2f}×",
                      f"{e['actor_step_ms']:.0f}"] for e in entries if e["part"] == "check"])
    if "delay" in parts:
        print_table(f"detection delay, in shifted windows of {DELAY_WINDOW:,} rows (1 = the first shifted window)",
                    ["shift", "drift verdict", "score drift", "quality drop", "incident after",
                     "false alarms before (verdict / quality / incident)"],
                    [[e["shift"], _window(e["drift_verdict_in_window"]), _window(e["score_drift_in_window"]),
                      _window(e["quality_drop_in_window"]),
                      "held back" if e["incidents_before"] else _window(e["incident_after_window"]),
                      f"{e['false_alarms_before']} / {e['false_quality_alarms_before']} / {e['incidents_before']} of "
                      f"{e['windows_before']}"] for e in entries if e["part"] == "delay"])
    if "writes" in parts:
        _report_writes(entries)
    print(f"total {result['seconds']:.0f} s (set-up {result['setup_s']:.0f} s)")
    write_result("drift" if tuple(parts) == PARTS else "-".join(["drift", *parts]), result)


def _report_writes(entries: list[dict]) -> None:
    rows = [[e["part"], f"{e['rows']:,}", f"{e['mlray_rows_per_s']:,.0f}", f"{e['reference_rows_per_s']:,.0f}",
             f"{e['ratio']:.2f}×"] for e in entries if e["part"] in ("inference_log", "labels")]
    rows += [["labels: one commit each → LabelLog", f"{e['before_labels']:,} → {e['after_labels']:,}",
              f"{e['after_labels_per_s']:,.0f}", f"{e['before_labels_per_s']:,.1f}", f"{e['ratio']:,.0f}×"]
             for e in entries if e["part"] == "labels_before_after"]
    print_table(f"writes (rows/s; flushes of {FLUSH_ROWS:,}): mlray vs write_deltalake per flush; labels after vs before",
                ["what", "rows", "mlray", "reference", "ratio"], rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window-rows", type=int, nargs="+", default=[1_000, 10_000], help="rows per checked window")
    parser.add_argument("--windows", type=int, default=7, help="measured windows per size (after one warm-up)")
    parser.add_argument("--before", type=int, default=3, help="in-distribution windows before a shift")
    parser.add_argument("--after", type=int, default=5, help="shifted windows")
    parser.add_argument("--rows", type=int, default=50_000, help="rows (and labels) written in the write part")
    parser.add_argument("--labels-before", type=int, default=300, help="labels written one commit each")
    parser.add_argument("--num-cpus", type=int, default=4, help="Ray logical CPUs")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts (default: all three); the "
                        "result goes to results/drift-<parts>.json")
    args = parser.parse_args(argv)
    parts = tuple(p for p in PARTS if p in (args.only or PARTS))
    result = run(args.window_rows, args.windows, args.before, args.after, args.rows, args.labels_before, args.num_cpus,
                 parts)
    report(result)
    return result


if __name__ == "__main__":
    main()
