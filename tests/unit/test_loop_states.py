"""The loops' statuses, defined once (`mlray.control.state`), and what they promise each other."""

import json

from mlray.control.state import INCIDENT_CLOSED, INCIDENT_FOLLOWED, ROLLOUT_ACTIVE, ROLLOUT_ENDED, IncidentStatus, RolloutStatus


def test_every_way_a_rollout_ends_closes_the_incident_it_answers():
    """The rollout controller records the rollout's end as its incident's status: each end must close the incident
    (the demo once waited until its timeout on a rollout stopped by hand)."""
    assert {IncidentStatus(status) for status in ROLLOUT_ENDED} <= INCIDENT_CLOSED


def test_a_rollout_is_either_active_or_ended_and_a_followed_incident_is_open():
    assert ROLLOUT_ACTIVE | ROLLOUT_ENDED == set(RolloutStatus) and not ROLLOUT_ACTIVE & ROLLOUT_ENDED
    assert not INCIDENT_FOLLOWED & INCIDENT_CLOSED


def test_statuses_are_stored_as_the_strings_the_state_tables_always_held():
    document = json.loads(json.dumps({"status": RolloutStatus.ROLLED_BACK}))
    assert document == {"status": "rolled_back"} and RolloutStatus(document["status"]) in ROLLOUT_ENDED
    assert "awaiting_approval" == IncidentStatus.AWAITING_APPROVAL and "stopped" in INCIDENT_CLOSED
