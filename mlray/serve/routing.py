"""Which model version answers a request: pinned, sticky by key, or weighted at random; and shadow mirroring.

Sticky keys use a fixed hash position in [0, 1): versions own consecutive intervals, challengers
first (in version order), the champion last. Raising a challenger's weight from 10% to 20% moves
exactly the keys whose position lies in [0.1, 0.2): the share it must, no more.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field


def key_position(key: str) -> float:
    """A stable position in [0, 1) for a sticky key (the same on every replica and every restart)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2.0**64


@dataclass(frozen=True)
class TrafficPlan:
    """Served versions and their weights (summing to 1), the champion, and an optional shadow."""

    champion: str
    weights: dict[str, float]
    shadow: str | None = None
    shadow_fraction: float = 0.0
    step: str = "stable"  # the rollout step, for /v1/models and metrics
    order: tuple[str, ...] = field(default=())  # derived: challengers in version order, the champion last
    versions: frozenset[str] = field(default=frozenset())  # derived: every version the plan serves, shadow included

    def __post_init__(self):
        total = sum(self.weights.values())
        if self.champion not in self.weights or any(w < 0 for w in self.weights.values()) or abs(total - 1) > 1e-6:
            raise ValueError(f"weights must be ≥ 0, sum to 1 and include the champion {self.champion}: {self.weights}")
        challengers = sorted((v for v in self.weights if v != self.champion), key=_version_key)
        object.__setattr__(self, "order", (*challengers, self.champion))
        object.__setattr__(self, "versions", frozenset(self.weights) | ({self.shadow} if self.shadow else frozenset()))

    @classmethod
    def only(cls, version: str) -> "TrafficPlan":
        return cls(version, {version: 1.0})

    def pick(self, sticky_key: str | None = None, rng: random.Random | None = None) -> str:
        """The version for one request: by the sticky key's position, else at random, by weight."""
        point = key_position(sticky_key) if sticky_key else (rng or random).random()
        edge = 0.0
        for version in self.order:
            edge += self.weights[version]
            if point < edge:
                return version
        return self.champion  # rounding at the very top of the interval

    def mirror(self, rng: random.Random | None = None) -> str | None:
        """The shadow version to mirror this request to, or None."""
        if self.shadow and self.shadow_fraction > 0 and (rng or random).random() < self.shadow_fraction:
            return self.shadow
        return None

    def to_dict(self) -> dict:
        return {"champion": self.champion, "weights": self.weights, "shadow": self.shadow,
                "shadow_fraction": self.shadow_fraction, "step": self.step}

    @classmethod
    def from_dict(cls, data: dict) -> "TrafficPlan":
        return cls(data["champion"], {str(k): float(v) for k, v in data["weights"].items()}, data.get("shadow"),
                   float(data.get("shadow_fraction", 0.0)), data.get("step", "stable"))


def _version_key(version: str) -> tuple:
    return (0, int(version)) if version.isdigit() else (1, version)
