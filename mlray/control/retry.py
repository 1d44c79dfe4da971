"""How long a loop waits after failures in a row: the wait doubles from `first` up to `cap`, so an outage of the lake,
MLflow or an actor is not met with a storm of calls (shared by the ingress's follower and the monitor's timer)."""


def backoff(failures: int, first: float = 1.0, cap: float = 30.0) -> float:
    """Seconds to wait after `failures` failures in a row (0: `first`); the exponent is capped, so it never overflows."""
    return min(cap, first * 2.0 ** min(max(0, failures - 1), 30))
