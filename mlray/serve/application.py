"""The Serve application builder for declarative deployments: `serve run`, `serve deploy` and KubeRay's RayService.

    serve run mlray.serve.application:build spec=mlray.yaml

or, in a Serve config (a RayService's serveConfigV2)::

    applications:
      - name: card-fraud                        # the spec's `name`
        route_prefix: /
        import_path: mlray.serve.application:build
        args: {spec: /config/mlray.yaml}        # default: $MLRAY_SPEC, then ./mlray.yaml

What it gives: the project's ingress application, the very one `deploy()` starts (`ingress_app`), with
the model versions loaded inside the ingress replicas (`serve.model_placement: ingress`). Its replicas
find (or start) the project's control-plane actor and serve the plan and API keys stored there, under
`platform.lake_root`: a cluster that comes back serves the same champion and keys without a redeploy.

What it does not do (it has no side effects; `deploy()`, i.e. `mlray deploy` or `jobs/deploy.py`, does these):
- set a plan or keys, or check that a champion exists: on a project never deployed the ingress answers
  503 "no model is deployed yet" and /v1/health says "starting" until a deploy sets the plan;
- start per-version Serve apps, so `serve.model_placement` must be `ingress`: `replicas` (and `auto`,
  which turns into replicas once there are GPUs) is refused, as those apps are started one by one by
  `deploy()` with `serve.run`, outside the config, and a new cluster (a RayService upgrade, a lost head)
  would come up with an ingress routing to versions nothing serves;
- start the rollout controller or the drift monitor (`jobs/canary.py`, `jobs/monitor.py`).
Name the application after the spec's `name` at route_prefix "/": `deploy()` then finds it running and
leaves it alone, as it does the ingress it started itself.
"""

from __future__ import annotations

from mlray.errors import UserError
from mlray.serve.ingress import ingress_app
from mlray.spec import load_spec


def build(args: dict):
    """The project's ingress application for the spec at `args["spec"]` (default: $MLRAY_SPEC, then ./mlray.yaml)."""
    spec = load_spec(args.get("spec"))
    if spec.serve.model_placement != "ingress":
        raise UserError(f"{spec.path}: serve.model_placement is '{spec.serve.model_placement}', but a Serve config or "
                        "RayService serves the models inside the ingress only: set serve.model_placement: ingress "
                        "(or MLRAY_SERVE__MODEL_PLACEMENT=ingress wherever the spec is loaded)")
    return ingress_app(spec, local=True)
