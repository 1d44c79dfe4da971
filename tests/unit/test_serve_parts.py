"""Routing, API keys and the body limit: the serving parts that need no Ray."""

import asyncio
import random

import pytest

from mlray.serve.auth import KeyRing, fingerprint, hash_key
from mlray.serve.limits import BodyLimit
from mlray.serve.routing import TrafficPlan


def test_weights_are_honoured_within_tolerance():
    plan = TrafficPlan("1", {"1": 0.9, "2": 0.1})
    rng = random.Random(7)
    picks = [plan.pick(rng=rng) for _ in range(5000)]
    assert abs(picks.count("2") / 5000 - 0.10) <= 0.02


def test_sticky_keys_keep_their_version_and_a_weight_change_moves_only_its_share():
    keys = [f"user-{i}" for i in range(20000)]
    at_10 = TrafficPlan("1", {"1": 0.9, "2": 0.1})
    at_20 = TrafficPlan("1", {"1": 0.8, "2": 0.2})
    before = {k: at_10.pick(k) for k in keys}
    assert all(at_10.pick(k) == v for k, v in list(before.items())[:500])  # the same key, the same version
    after = {k: at_20.pick(k) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == "1" and after[k] == "2" for k in moved)  # nobody left the challenger
    assert abs(len(moved) / len(keys) - 0.10) <= 0.01  # about the 10% it must move, not more


def test_a_plan_must_add_up_and_include_the_champion():
    with pytest.raises(ValueError, match="sum to 1"):
        TrafficPlan("1", {"1": 0.5, "2": 0.4})
    with pytest.raises(ValueError, match="include the champion"):
        TrafficPlan("3", {"1": 1.0})
    plan = TrafficPlan("1", {"1": 1.0}, shadow="2", shadow_fraction=1.0)
    assert plan.mirror() == "2" and TrafficPlan.from_dict(plan.to_dict()) == plan


def test_keys_are_hashed_and_checked():
    env_key, other = "from-env-" + "e" * 32, "other-" + "o" * 32
    ring = KeyRing([hash_key("from-spec")], environ={"MLRAY_API_KEYS": f"{env_key}, {other}"})
    assert len(ring) == 3
    assert ring.accepts("Bearer from-spec") and ring.accepts(f"Bearer {other}")
    assert ring.accepts(f"bearer {other}") and ring.accepts(f"BEARER  {other} ")  # the scheme is case-insensitive
    assert not ring.accepts("Bearer nope") and not ring.accepts("from-spec") and not ring.accepts(None)
    assert not ring.accepts(f"Basic {other}") and not ring.accepts(f"Bearer {other} extra")


def test_a_short_plain_key_is_refused_without_echoing_it():
    from mlray.errors import UserError

    with pytest.raises(UserError, match="MLRAY_API_KEYS: an API key needs at least 32 characters, got 9") as caught:
        KeyRing([], environ={"MLRAY_API_KEYS": "short-key"})
    assert "short-key" not in str(caught.value)


def test_the_deploying_shell_may_bring_no_keys_and_fingerprints_never_show_the_hash():
    from mlray.spec import ServeSpec

    assert len(KeyRing.for_serving(ServeSpec())) == 0  # the control plane may hold keys (`mlray keys add`)
    hashed = hash_key("secret")
    assert fingerprint(hashed).startswith("sha256:") and hashed not in fingerprint(hashed)
    assert KeyRing([hashed, hashed]).hashes == [hashed]  # a key listed twice counts once


def test_injected_faults_are_checked_and_fail_or_delay_the_batch():
    from mlray.errors import UserError
    from mlray.serve.model_server import Fault, InjectedFault, LoadedVersion

    with pytest.raises(UserError, match="error_rate"):
        Fault(error_rate=1.5)
    assert not Fault() and Fault(delay_ms=5)
    version = LoadedVersion.__new__(LoadedVersion)  # no package needed: the fault acts before scoring
    version.version, version.fault = "3", Fault(error_rate=1.0)
    with pytest.raises(InjectedFault, match="version 3"):
        asyncio.run(version.score([]))


def test_the_ingress_scales_itself_only_when_it_holds_the_models():
    from mlray.serve.ingress import ingress_scaling
    from mlray.spec import ServeSpec

    spec = ServeSpec(ingress_replicas=2)
    assert ingress_scaling(spec, local=False) == {"num_replicas": 2}
    scaling = ingress_scaling(spec.model_copy(update={"autoscaling": spec.autoscaling.model_copy(
        update={"min_replicas": 0})}), local=True)["autoscaling_config"]
    assert scaling["min_replicas"] == 1 and scaling["max_replicas"] == spec.autoscaling.max_replicas


def _call(app, headers, chunks):
    sent = []

    async def receive():
        body = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "http", "headers": headers}, receive, send))
    return sent


async def _echo(scope, receive, send):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_the_body_limit_refuses_large_bodies_before_the_app_reads_them():
    limited = BodyLimit(_echo, limit=10)
    assert _call(limited, [(b"content-length", b"11")], [b"x" * 11])[0]["status"] == 413
    assert _call(limited, [], [b"x" * 6, b"x" * 6])[0]["status"] == 413  # chunked, counted as it arrives
    assert _call(limited, [(b"content-length", b"5")], [b"hello"])[1]["body"] == b"hello"


def test_a_request_row_needs_the_model_inputs_but_not_the_id_or_the_label(starter_text):
    from pydantic import ValidationError

    from mlray.serve.ingress import request_columns
    from mlray.serve.schema import row_model
    from mlray.spec import parse_spec

    spec = parse_spec(starter_text)
    columns, required = request_columns(spec)
    Row = row_model(spec.train_table, columns, required)
    inputs = {"event_time": "2026-11-01T10:00:00Z", "amount": 12.5, "country": "DE"}
    assert Row.model_validate(inputs).transaction_id is None  # no id, no customer_id, no label: fine
    assert Row.model_validate(inputs | {"transaction_id": "t-1", "is_fraud": False}).transaction_id == "t-1"
    with pytest.raises(ValidationError, match="amount"):
        Row.model_validate({k: v for k, v in inputs.items() if k != "amount"})  # a feature's input is required


def test_a_package_that_no_longer_loads_from_its_recorded_place_is_found_through_the_registry(project, monkeypatch):
    from mlray.serve import pool

    loaded = []

    class Loaded:
        def __init__(self, platform, uri, version, schema):
            if uri.startswith("file:///moved"):
                raise OSError(f"No such file or directory: {uri}")
            loaded.append((version, uri))

        def batched(self, batching):
            return None

    monkeypatch.setattr(pool, "LoadedVersion", Loaded)
    models = pool.InProcessPool(project)
    monkeypatch.setattr(models, "_resolve", lambda version: f"file:///artifacts/{version}")
    models._load({"1", "2", "3"}, {"1": "file:///moved/1", "2": "file:///kept/2"})  # 3: a state from before packages
    assert loaded == [("1", "file:///artifacts/1"), ("2", "file:///kept/2"), ("3", "file:///artifacts/3")]


def test_serve_settings_a_running_ingress_takes_and_those_that_need_a_restart():
    from mlray.serve.settings import described, needing_restart
    from mlray.spec import ServeSpec

    running = ServeSpec(auth=False).model_dump(mode="json")
    assert needing_restart(running, ServeSpec(auth=True, max_body_bytes=4096)) == []  # pushed, applied at once
    assert needing_restart(running, ServeSpec(auth=False, port=8001, ingress_replicas=2)) == [
        "serve.port 8000 → 8001", "serve.ingress_replicas 1 → 2"]
    assert needing_restart(None, ServeSpec(port=8001)) == []  # nothing known of what runs: the push carries it all
    assert described(running, ServeSpec(auth=True)) == "auth False → True"
    assert described(running, ServeSpec(auth=False)) == "no change" and described(None, ServeSpec()) == "first settings"
