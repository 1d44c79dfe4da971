"""Deploying: one Serve application per model version, the traffic plan, and the ingress in front.

`deploy` is idempotent: a version already running is left alone, and the ingress is started only
when it is not running, so re-deploying never restarts what serves traffic. Weights change
through the traffic table, never by redeploying.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from mlray.audit import AuditLog
from mlray.errors import UserError
from mlray.registry.models import Registry
from mlray.serve.auth import KeyRing, fingerprint
from mlray.serve.ingress import build_ingress, model_app_name
from mlray.serve.model_server import Fault, ModelServer, replica_options
from mlray.serve.routing import TrafficPlan
from mlray.serve.traffic import POLL_S, traffic_table
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)


@dataclass
class Deployment:
    url: str
    plan: TrafficPlan
    started: list[str]  # model versions started by this call


def start_serve(spec: ProjectSpec) -> None:
    from ray import serve

    serve.start(http_options={"host": spec.serve.host, "port": spec.serve.port})


def running_apps() -> dict[str, str]:
    from ray import serve

    return {name: getattr(app.status, "value", str(app.status)) for name, app in serve.status().applications.items()}


def _gpus(spec: ProjectSpec) -> float:
    import ray

    if spec.serve.use_gpu == "auto":
        return spec.serve.gpu_fraction if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    return spec.serve.gpu_fraction if spec.serve.use_gpu else 0.0


def placement(spec: ProjectSpec) -> str:
    """Where model versions run: `serve.model_placement`, with 'auto' → 'replicas' when they get GPUs, else 'ingress'."""
    if spec.serve.model_placement != "auto":
        return spec.serve.model_placement
    return "replicas" if _gpus(spec) else "ingress"


def ensure_version(spec: ProjectSpec, registry: Registry, version: str, fault: Fault | None = None) -> bool:
    """Start the Serve app of one registered version unless it runs; True when it was started.
    A `fault` (re)starts it with injected faults (`Fault()` restarts it without)."""
    from ray import serve

    if placement(spec) == "ingress":  # the ingress loads the plan's versions itself
        if fault is not None:
            raise UserError("fault injection needs serve.model_placement: replicas (each version on its own replicas)")
        registry.resolve(version)
        return False
    name = model_app_name(spec.name, version)
    if fault is None and running_apps().get(name) == "RUNNING":
        return False
    model_name, version = registry.resolve(version)
    server = ModelServer.options(**replica_options(spec.serve, _gpus(spec))).bind(
        spec.platform, registry.artifact_uri(model_name, version), version, spec.serve.batching, fault)
    log.info("starting model version %s as Serve app %s", version, name)
    serve.run(server, name=name, route_prefix=None)
    return True


def deploy(spec: ProjectSpec, versions: list[str] | None = None, plan: TrafficPlan | None = None,
           actor: str | None = None, fault: Fault | None = None) -> Deployment:
    """Serve the champion (and `versions`), set the traffic plan (default: all to the champion), start the ingress.
    `fault` (re)starts `versions` with injected faults."""
    import ray
    from ray import serve

    registry = Registry(spec)
    champion = registry.version_of("champion")
    if champion is None and plan is None:
        raise UserError(f"model '{spec.name}' has no champion to serve: train one first (`mlray train`)")
    table = traffic_table(spec.name, spec.platform.state_dir)
    before = ray.get(table.get.remote())[1]
    if plan is None:  # keep the live plan (a rollout in progress keeps its weights), else all to the champion
        live = TrafficPlan.from_dict(before) if before else None
        # a champion alias moved by hand (`mlray models alias champion N`) takes all traffic
        plan = live if live is not None and live.champion == champion else TrafficPlan.only(champion)
    # every version must exist before anything starts; aliases become the versions they point at now
    extra = [registry.resolve(reference)[1] for reference in versions or []]
    plan = TrafficPlan(plan.champion, {v: 0.0 for v in extra} | plan.weights, plan.shadow, plan.shadow_fraction,
                       plan.step)  # extra versions are served at weight 0: pinnable, ready for a canary
    wanted = list(dict.fromkeys([*plan.weights, *([plan.shadow] if plan.shadow else [])]))
    for version in wanted:
        registry.resolve(version)
    ring = KeyRing.for_serving(spec.serve)
    start_serve(spec)
    started = [v for v in wanted if ensure_version(spec, registry, v, fault if v in extra else None)]
    ray.get(table.set.remote(plan.to_dict()))
    _set_keys(spec, table, ring, actor)
    if running_apps().get(spec.name) != "RUNNING":
        serve.run(build_ingress(spec, local=placement(spec) == "ingress").bind(), name=spec.name, route_prefix="/")
    reason = f"serving {', '.join(wanted)}; started {', '.join(started) or 'nothing new'}"
    if fault is not None:
        reason += f"; faults in {', '.join(extra)}: {vars(fault) if fault else 'none'}"
    AuditLog(spec.platform.state_dir).append("deploy", spec.name, reason, before, plan.to_dict(), actor)
    return Deployment(f"http://{spec.serve.host}:{spec.serve.port}", plan, started)


def _set_keys(spec: ProjectSpec, table, ring: KeyRing, actor: str | None) -> None:
    """Hand the deploying process's keys to the running ingress (no restart); a change goes to the audit log."""
    import ray

    before = ray.get(table.set_keys.remote(ring.hashes))
    if before == ring.hashes:
        return
    before, after = set(before or []), set(ring.hashes)
    AuditLog(spec.platform.state_dir).append(
        "keys.change", spec.name, f"{len(after - before)} key(s) added, {len(before - after)} revoked",
        sorted(fingerprint(h) for h in before), sorted(fingerprint(h) for h in after), actor)


def set_traffic(spec: ProjectSpec, plan: TrafficPlan) -> TrafficPlan:
    """Change the weights (and shadow) live: every version in the plan must be served already."""
    import ray

    versions = [*plan.weights, *([plan.shadow] if plan.shadow else [])]
    if placement(spec) == "ingress":
        registry = Registry(spec)
        for version in versions:
            registry.resolve(version)  # the ingress loads it before the plan takes effect
        missing = []
    else:
        apps = running_apps()
        missing = [v for v in versions if apps.get(model_app_name(spec.name, v)) != "RUNNING"]
    if missing:
        raise UserError(f"version(s) {', '.join(missing)} are not served: deploy them first (`mlray deploy`)")
    ray.get(traffic_table(spec.name, spec.platform.state_dir).set.remote(plan.to_dict()))
    return plan


def current_plan(spec: ProjectSpec) -> dict | None:
    import ray

    return ray.get(traffic_table(spec.name, spec.platform.state_dir).get.remote())[1]


def rollback_to_previous(spec: ProjectSpec, actor: str) -> TrafficPlan:
    """`previous` becomes champion again (served, all traffic), the champion it replaces becomes `previous`."""
    registry = Registry(spec)
    previous, champion = registry.version_of("previous"), registry.version_of("champion")
    if previous is None:
        raise UserError(f"model '{spec.name}' has no previous version to roll back to")
    before = current_plan(spec)
    start_serve(spec)
    ensure_version(spec, registry, previous)
    registry.promote(previous)  # champion ↔ previous
    plan = set_traffic(spec, TrafficPlan(previous, {previous: 1.0}, step="rolled back"))
    AuditLog(spec.platform.state_dir).append("rollback", f"{spec.name} v{champion}", f"champion back to v{previous}",
                                             before, plan.to_dict(), actor)
    return plan


def undeploy_version(spec: ProjectSpec, version: str, actor: str | None = None) -> None:
    """Stop serving a version that takes no traffic: out of the plan first, then its Serve app deleted."""
    from ray import serve

    before = current_plan(spec)
    if before:
        plan = TrafficPlan.from_dict(before)
        if plan.weights.get(version, 0.0) > 0 or plan.shadow == version or plan.champion == version:
            raise UserError(f"version {version} still takes traffic ({plan.to_dict()}): move its weight away first")
        weights = {v: w for v, w in plan.weights.items() if v != version}
        set_traffic(spec, TrafficPlan(plan.champion, weights, plan.shadow, plan.shadow_fraction, plan.step))
        time.sleep(2 * POLL_S)  # every ingress replica stops routing to it before it goes
    if placement(spec) == "replicas":
        serve.delete(model_app_name(spec.name, version))
    AuditLog(spec.platform.state_dir).append("undeploy", f"{spec.name} v{version}", "no longer served", before,
                                             current_plan(spec), actor)
