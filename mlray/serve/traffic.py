"""The traffic table: one named Ray actor holding the current `TrafficPlan`, persisted in the state folder.

Ingress replicas poll it (every `POLL_S`), so a weight change, a promotion or a rollback reaches
every replica without restarting anything, and no request is lost on the way. The rollout
controller and `mlray canary` write it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import ray

from mlray.serve.routing import TrafficPlan

log = logging.getLogger(__name__)
POLL_S = 0.5
NAMESPACE = "mlray"


@ray.remote(num_cpus=0)
class TrafficTable:
    def __init__(self, path: str):
        self.path = Path(path)
        self.plan: dict | None = json.loads(self.path.read_text()) if self.path.is_file() else None
        self.revision = 0

    def get(self) -> tuple[int, dict | None]:
        return self.revision, self.plan

    def set(self, plan: dict) -> int:
        TrafficPlan.from_dict(plan)  # refuse a plan that does not add up
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_suffix(".tmp")
        staged.write_text(json.dumps(plan, indent=2))
        staged.replace(self.path)  # atomic: a crash leaves the old plan or the new one
        self.plan, self.revision = plan, self.revision + 1
        return self.revision


def actor_name(project: str) -> str:
    return f"{project}-traffic"


def traffic_table(project: str, state_dir: str):
    """The project's traffic table actor, started (detached) if it is not running."""
    return TrafficTable.options(name=actor_name(project), namespace=NAMESPACE, lifetime="detached",
                                get_if_exists=True).remote(str(Path(state_dir) / "serve" / "traffic.json"))
