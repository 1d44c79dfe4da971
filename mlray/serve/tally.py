"""Per-request serving metrics, kept off the request path: a request adds plain numbers to a tally, and the ingress
records the tally into its Prometheus metrics (`mlray.metrics.serving`) with every log flush. A recording through
Ray's metrics API costs tens of microseconds, several times per request; a tally entry costs an append.

The tally lives on the replica's event loop (requests and the flush both run there), so it needs no lock.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from mlray.metrics import serving

ROUTE = "/v1/predict"  # the route every tallied request took (recorded after the request, out of its context)


class Tally:
    def __init__(self):
        self.requests: Counter[tuple[str, str]] = Counter()  # (version, outcome) → requests
        self.latencies: defaultdict[str, list[float]] = defaultdict(list)  # version → seconds
        self.scores: defaultdict[str, list[float]] = defaultdict(list)  # version → scores

    def request(self, version: str, outcome: str, latency_s: float | None = None, scores: list[float] = ()) -> None:
        self.requests[version, outcome] += 1
        if latency_s is not None:
            self.latencies[version].append(latency_s)
        if scores:
            self.scores[version].extend(scores)

    def record(self) -> int:
        """Move what was tallied since the last call into the metrics; returns the requests recorded."""
        requests, latencies, scores = self.requests, self.latencies, self.scores
        self.requests, self.latencies, self.scores = Counter(), defaultdict(list), defaultdict(list)
        metrics = serving()
        for (version, outcome), count in requests.items():
            metrics["requests"].inc(count, tags={"model_version": version, "outcome": outcome, "route": ROUTE})
        for name, observed in (("latency", latencies), ("score", scores)):
            for version, values in observed.items():
                tags = {"model_version": version, "route": ROUTE}
                for value in values:
                    metrics[name].observe(value, tags=tags)
        return sum(requests.values())
