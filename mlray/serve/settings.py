"""Which `serve` settings a running service takes from the control plane, and which need its ingress restarted.

The control plane keeps the `serve` section of the last deploy with the plan and the keys, and pushes it to every
ingress replica the same way (`ServingState.serve`): the settings a request reads (authentication, limits, headers,
how often the log is flushed) apply at once. Those Serve fixes when it starts a deployment (where it listens, how many
replicas with what resources, how models are placed and batched, which tables are written) need the ingress started
again: a deploy that changes one refuses to report success unless told to restart.
"""

from __future__ import annotations

from mlray.spec import ServeSpec

# read by the ingress on every request or flush: a pushed change applies at once
LIVE = frozenset({"auth", "api_keys", "max_body_bytes", "max_rows_per_request", "max_string_length", "sticky_header",
                  "pin_header", "log_flush_s"})


def changes(applied: dict, wanted: ServeSpec) -> list[tuple[str, str]]:
    """(setting, 'port 8000 → 8001') for each setting the spec changes from what runs."""
    return [(name, f"{name} {applied.get(name)!r} → {value!r}")
            for name, value in wanted.model_dump(mode="json").items() if applied.get(name) != value]


def needing_restart(applied: dict | None, wanted: ServeSpec) -> list[str]:
    """'serve.port 8000 → 8001' for each setting a running ingress cannot take without a restart (none when nothing
    is known of what runs: the push then carries everything)."""
    if applied is None:
        return []
    return [f"serve.{change}" for name, change in changes(applied, wanted) if name not in LIVE]


def described(applied: dict | None, wanted: ServeSpec) -> str:
    """The changes, one phrase each, for the audit entry and the deploy's answer."""
    if applied is None:
        return "first settings"
    return "; ".join(change for _, change in changes(applied, wanted)) or "no change"
