"""The traffic table: one named Ray actor holding the current `TrafficPlan` and the accepted API-key hashes,
both persisted in the state folder.

Ingress replicas poll it (every `POLL_S`), so a weight change, a promotion, a rollback or a key
rotation reaches every replica without restarting anything, and no request is lost on the way.
The rollout controller and `mlray canary` write the plan; `mlray deploy` writes the keys.
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


def read_json(path: Path):
    """A JSON state file, or None when there is none yet."""
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, value) -> None:
    """Replace a JSON state file atomically: a crash leaves the old value or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps(value, indent=2))
    staged.replace(path)


@ray.remote(num_cpus=0)
class TrafficTable:
    def __init__(self, folder: str):
        self.plan_path, self.keys_path = Path(folder) / "traffic.json", Path(folder) / "keys.json"
        self.plan: dict | None = read_json(self.plan_path)
        self.keys: list[str] | None = read_json(self.keys_path)  # 'sha256:…' hashes, never keys
        self.revision = 0  # grows with every change of either

    def get(self) -> tuple[int, dict | None]:
        return self.revision, self.plan

    def snapshot(self) -> tuple[int, dict | None, list[str] | None]:
        return self.revision, self.plan, self.keys

    def set(self, plan: dict) -> int:
        TrafficPlan.from_dict(plan)  # refuse a plan that does not add up
        write_json(self.plan_path, plan)
        self.plan, self.revision = plan, self.revision + 1
        return self.revision

    def set_keys(self, hashes: list[str]) -> list[str] | None:
        """Replace the accepted key hashes; returns the ones before."""
        before = self.keys
        write_json(self.keys_path, sorted(hashes))
        self.keys, self.revision = sorted(hashes), self.revision + 1
        return before


def actor_name(project: str) -> str:
    return f"{project}-traffic"


def traffic_table(project: str, state_dir: str):
    """The project's traffic table actor, started (detached) if it is not running."""
    return TrafficTable.options(name=actor_name(project), namespace=NAMESPACE, lifetime="detached",
                                get_if_exists=True).remote(str(Path(state_dir) / "serve"))
