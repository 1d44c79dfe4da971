"""The statuses of a rollout and of an incident, each defined once. They are `StrEnum`s: a member equals, hashes and
serialises as its string, so the state tables keep the documents they always held."""

from __future__ import annotations

from enum import StrEnum


class RolloutStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    STOPPED = "stopped"  # by a change made by hand


ROLLOUT_ACTIVE = frozenset({RolloutStatus.RUNNING, RolloutStatus.PAUSED})
ROLLOUT_ENDED = frozenset(RolloutStatus) - ROLLOUT_ACTIVE


class IncidentStatus(StrEnum):
    OPEN = "open"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    SUBMITTED = "submitted"  # its retraining job
    RUNNING = "running"
    RETRAINED = "retrained"  # a challenger registered; its rollout runs
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    STOPPED = "stopped"
    REJECTED = "rejected"  # by the gate
    FAILED = "failed"
    UNFINISHED = "unfinished"  # the rollout had not ended within retrain.rollout_timeout


INCIDENT_CLOSED = frozenset({IncidentStatus.PROMOTED, IncidentStatus.ROLLED_BACK, IncidentStatus.STOPPED,
                             IncidentStatus.REJECTED, IncidentStatus.FAILED, IncidentStatus.UNFINISHED})
INCIDENT_FOLLOWED = frozenset({IncidentStatus.SUBMITTED, IncidentStatus.RUNNING, IncidentStatus.RETRAINED})  # a job runs
