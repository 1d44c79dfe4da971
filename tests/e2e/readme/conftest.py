import pytest


@pytest.fixture(autouse=True)
def _ray():
    """No suite Ray here: the README's walkthrough starts and stops a Ray of its own with `ray start` / `ray stop`."""
    return None
