"""Deploying: start what the plan needs (model versions, the ingress) and hand the plan to the control plane.

Thin by design: policy (what the plan is, who may change it, what a change stops) lives in the
control plane (`control.py`). `deploy` is idempotent: a version already running is left alone, and the
ingress is started only when it is not running, so re-deploying never restarts what serves traffic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import ray
from ray import serve

from mlray.audit import default_actor
from mlray.errors import UserError
from mlray.lake import Lake
from mlray.registry.models import Registry
from mlray.serve import control
from mlray.serve.auth import KeyRing
from mlray.serve.ingress import ingress_app
from mlray.serve.logbook import create_tables
from mlray.serve.model_server import Fault, ModelServer, replica_options
from mlray.serve.pool import model_app_name
from mlray.serve.routing import TrafficPlan
from mlray.serve.schema import request_columns, request_schema
from mlray.serve.settings import described, needing_restart
from mlray.spec import ProjectSpec

log = logging.getLogger(__name__)


@dataclass
class Deployment:
    url: str
    plan: TrafficPlan
    started: list[str]  # model versions started by this call
    settings: str = "no change"  # the `serve` settings this call changed, as the audit entry says it


def start_serve(spec: ProjectSpec) -> None:
    serve.start(http_options={"host": spec.serve.host, "port": spec.serve.port})


def running_apps() -> dict[str, str]:
    return {name: getattr(app.status, "value", str(app.status)) for name, app in serve.status().applications.items()}


def _gpus(spec: ProjectSpec) -> float:
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
    if placement(spec) == "ingress":  # the ingress loads the plan's versions itself
        if fault is not None:
            raise UserError("fault injection needs serve.model_placement: replicas (each version on its own replicas)")
        registry.resolve(version)
        return False
    name = model_app_name(spec.name, version)
    if fault is None and running_apps().get(name) == "RUNNING":
        return False
    model_name, version = registry.resolve(version)
    schema = request_schema(spec.train_table, request_columns(spec)[0])
    server = ModelServer.options(**replica_options(spec.serve, _gpus(spec))).bind(
        spec.platform, registry.artifact_uri(model_name, version), version, schema, spec.serve.batching, fault)
    log.info("starting model version %s as Serve app %s", version, name)
    serve.run(server, name=name, route_prefix=None)
    return True


def deploy(spec: ProjectSpec, versions: list[str] | None = None, plan: TrafficPlan | None = None,
           actor: str | None = None, fault: Fault | None = None, keys: KeyRing | None = None,
           restart: bool = False, hand_over: bool = True) -> Deployment:
    """Serve the champion (and `versions`, at weight 0), set the plan (default: the live one, or all to the champion),
    start the ingress. `keys` (the caller's, e.g. `KeyRing.for_serving`) are added to the accepted ones (only
    `mlray keys revoke` removes a key).
    `fault` (re)starts `versions` with injected faults. Changed `serve` settings reach the running ingress (pushed
    like the plan); one it cannot take (its port, replicas, placement, ...) is refused with "restart needed" unless
    `restart`, which starts the ingress again (requests in flight on it fail). `hand_over`: the spec becomes the one
    the control plane, the rollout controller and the monitor run on (a canary's deploy of its challenger keeps
    theirs)."""
    actor = actor or default_actor()
    registry = Registry(spec)
    state = control.client(spec).snapshot()
    if spec.serve.auth and state["keys"] is None and not (keys and len(keys)):
        raise UserError("serve.auth is on but there are no API keys: add one with `mlray keys add` (or set "
                        "serve.api_keys hashes, or MLRAY_API_KEYS in the deploying shell)")
    running = running_apps().get(spec.name) == "RUNNING"
    if running and not restart and (fixed := needing_restart(state.get("serve"), spec.serve)):
        raise UserError(f"restart needed: {', '.join(fixed)} cannot change while the service runs; deploy with "
                        f"--restart to start its ingress again (requests in flight on it fail)")
    create_tables(spec, Lake.from_platform(spec.platform))  # a log left with another schema stops here, in one line
    live = TrafficPlan.from_dict(state["plan"]) if state["plan"] else None
    if plan is None:
        champion = control.client(spec).aliases()["champion"]
        if champion is None:
            raise UserError(f"model '{spec.name}' has no champion to serve: train one first (`mlray train`)")
        # keep the live plan (a rollout in progress keeps its weights), unless the champion alias moved
        plan = live if live is not None and live.champion == champion else TrafficPlan.only(champion)
    # every version must exist before anything starts; aliases become the versions they point at now
    extra = [registry.resolve(reference)[1] for reference in versions or []]
    plan = TrafficPlan(plan.champion, {v: 0.0 for v in extra} | plan.weights, plan.shadow, plan.shadow_fraction,
                       plan.step)  # extra versions are served at weight 0: pinnable, ready for a canary
    wanted = sorted(plan.versions)
    for version in wanted:
        registry.resolve(version)
    start_serve(spec)
    started = [v for v in wanted if ensure_version(spec, registry, v, fault if v in extra else None)]
    reason = f"serving {', '.join(wanted)}; started {', '.join(started) or 'nothing new'}"
    if fault is not None:
        reason += f"; faults in {', '.join(extra)}: {vars(fault) if fault else 'none'}"
    if keys is not None and len(keys):
        control.client(spec).change_keys(keys.hashes, [], actor)
    if hand_over:
        control.client(spec).hand_over_spec(actor)
    settings = described(state.get("serve"), spec.serve)
    control.client(spec).set_serve(spec.serve.model_dump(mode="json"), actor)  # keys first: auth never lacks them
    state = control.client(spec).set_plan(plan.to_dict(), actor, "deploy", reason,
                         overrides_rollout=_reroutes(live, plan))
    if running and restart:
        log.info("starting the ingress of %s again (--restart)", spec.name)
        serve.delete(spec.name)
    if running_apps().get(spec.name) != "RUNNING":
        serve.run(ingress_app(spec, local=placement(spec) == "ingress"), name=spec.name, route_prefix="/")
    settle(spec, state["revision"])
    return Deployment(f"http://{spec.serve.host}:{spec.serve.port}", plan, started, settings)


def _reroutes(live: TrafficPlan | None, plan: TrafficPlan) -> bool:
    """Whether `plan` sends traffic elsewhere than `live` (versions added at weight 0 do not)."""
    if live is None:
        return False

    def routing(p: TrafficPlan):
        return p.champion, {v: w for v, w in p.weights.items() if w > 0}, p.shadow, p.shadow_fraction

    return routing(live) != routing(plan)


def check_served(spec: ProjectSpec, plan: TrafficPlan) -> None:
    """Every version of `plan` must be served (replicas) or loadable (in the ingress) before the plan is set."""
    if placement(spec) == "ingress":
        registry = Registry(spec)
        for version in plan.versions:
            registry.resolve(version)  # the ingress loads it before the plan takes effect
        return
    apps = running_apps()
    missing = sorted(v for v in plan.versions if apps.get(model_app_name(spec.name, v)) != "RUNNING")
    if missing:
        raise UserError(f"version(s) {', '.join(missing)} are not served: deploy them first (`mlray deploy`)")


def set_traffic(spec: ProjectSpec, plan: TrafficPlan, actor: str | None = None, action: str = "traffic",
                reason: str = "weights set by hand") -> TrafficPlan:
    """Change the weights (and shadow) live; a running rollout stops. Every version in the plan must be served."""
    check_served(spec, plan)
    settle(spec, control.client(spec).set_plan(plan.to_dict(), actor or default_actor(), action, reason)["revision"])
    return plan


def current_plan(spec: ProjectSpec) -> dict | None:
    return control.client(spec).snapshot()["plan"]


def rollback_to_previous(spec: ProjectSpec, actor: str) -> TrafficPlan:
    """`previous` becomes champion again (served, all traffic), the champion it replaces becomes `previous`;
    a rollout in progress stops."""
    registry = Registry(spec)
    previous = control.client(spec).aliases()["previous"]
    if previous is None:
        raise UserError(f"model '{spec.name}' has no previous version to roll back to")
    start_serve(spec)
    ensure_version(spec, registry, previous)
    state = control.client(spec).rollback_to(previous, actor)  # names its target: a retried call changes nothing more
    settle(spec, state["revision"])
    return TrafficPlan.from_dict(state["plan"])


def settle(spec: ProjectSpec, revision: int) -> None:
    """Return once every live ingress replica applies `revision`: a caller's change is in effect when it returns."""
    if not control.client(spec).settled(revision):
        log.warning("an ingress replica of %s has not applied revision %d after 30 s", spec.name, revision)


def change_keys(spec: ProjectSpec, add: list[str], revoke: list[str], actor: str | None = None) -> dict:
    """Accept the key hashes `add`, stop accepting those `revoke` names (hash or fingerprint); in effect on every
    ingress replica when it returns. The control plane's state."""
    state = control.client(spec).change_keys(add, revoke, actor or default_actor())
    settle(spec, state["revision"])
    return state


def undeploy_version(spec: ProjectSpec, version: str, actor: str | None = None) -> None:
    """Stop serving a version that takes no traffic: out of the plan first, then its Serve app deleted."""
    before = current_plan(spec)
    if before:
        plan = TrafficPlan.from_dict(before)
        if plan.weights.get(version, 0.0) > 0 or plan.shadow == version or plan.champion == version:
            raise UserError(f"version {version} still takes traffic ({plan.to_dict()}): move its weight away first")
        weights = {v: w for v, w in plan.weights.items() if v != version}
        state = control.client(spec).set_plan(TrafficPlan(plan.champion, weights, plan.shadow, plan.shadow_fraction,
                                                           plan.step).to_dict(),
                             actor or default_actor(), "undeploy", f"v{version} no longer served", overrides_rollout=False)
        settle(spec, state["revision"])  # every ingress replica stops routing to it before it goes
    if placement(spec) == "replicas":
        serve.delete(model_app_name(spec.name, version))
