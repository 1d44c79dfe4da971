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


def changed(applied: dict | None, wanted: ServeSpec) -> dict[str, tuple]:
    """{setting: (what runs, what the spec says)} for each setting that differs; every one when nothing is known of
    what runs (a service deployed by an older mlray, or never)."""
    now = wanted.model_dump(mode="json")
    before = applied or {}
    return {name: (before.get(name), value) for name, value in now.items() if before.get(name) != value}


def needing_restart(applied: dict | None, wanted: ServeSpec) -> list[str]:
    """'serve.port 8000 → 8001' for each setting a running ingress cannot take without a restart (none when nothing
    is known of what runs: the push then carries everything)."""
    if applied is None:
        return []
    return [f"serve.{name} {old!r} → {new!r}" for name, (old, new) in changed(applied, wanted).items()
            if name not in LIVE]


def described(applied: dict | None, wanted: ServeSpec) -> str:
    """The changes, one phrase each, for the audit entry and the deploy's answer."""
    return "; ".join(f"{name} {old!r} → {new!r}" for name, (old, new) in changed(applied, wanted).items()
                     if applied is not None) or ("first settings" if applied is None else "no change")
