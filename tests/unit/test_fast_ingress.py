"""Serve's fast ingress on a Ray mlray starts: the variables it gets, and the HAProxy wrapper that keeps HAProxy's
side listeners on loopback while leaving the serving listener as Ray wrote it (a real sh and sed run here)."""

import os
import subprocess
from pathlib import Path

from mlray import fast_ingress as fast

# The shape of the config Ray 2.60 writes (haproxy_templates.py): the serving frontend binds serve.host, the
# Prometheus exporter and the stats page bind every interface.
CONFIG = """global
    stats socket /tmp/x/admin.sock mode 666 level admin
frontend prometheus
    bind :9301
    mode http
frontend http_frontend
    bind {serving}:8000
    default_backend b
listen stats
  bind *:9404
  stats enable
"""


def run_wrapper(tmp_path: Path, serving: str) -> tuple[str, list[str]]:
    """Run the wrapper as Ray would (`-db -f CONFIG -dR`) in front of a stand-in binary that prints its arguments;
    returns the config HAProxy would read and the arguments it got."""
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG.format(serving=serving))
    stand_in = tmp_path / "print-args"
    stand_in.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    stand_in.chmod(0o755)
    wrapper = fast.write_wrapper(tmp_path / "serve", str(stand_in))
    done = subprocess.run([str(wrapper), "-db", "-f", str(config), "-dR"], capture_output=True, text=True, check=True,
                          env={"PATH": os.environ["PATH"], fast.STATS_PORT: "9404", fast.METRICS_PORT: "9301"})
    return config.read_text(), done.stdout.split()


def test_the_wrapper_binds_stats_and_metrics_to_loopback_and_leaves_the_serving_listener(tmp_path):
    config, args = run_wrapper(tmp_path, "127.0.0.1")
    assert "    bind 127.0.0.1:9301\n" in config and "  bind 127.0.0.1:9404\n" in config
    assert "    bind 127.0.0.1:8000\n" in config
    assert args == ["-db", "-f", str(tmp_path / "haproxy.cfg"), "-dR"]  # HAProxy gets exactly Ray's arguments
    assert "stats socket /tmp/x/admin.sock mode 600 level admin" in config  # Ray writes 666
    everywhere, _ = run_wrapper(tmp_path, "*")  # serve.host 0.0.0.0: the user asked for every interface
    assert "    bind *:8000\n" in everywhere and "bind 127.0.0.1:9404" in everywhere


def test_the_wrapper_is_rewritten_only_when_it_changes(tmp_path):
    first = fast.write_wrapper(tmp_path, "/opt/haproxy")
    assert os.access(first, os.X_OK) and "exec /opt/haproxy " in first.read_text()
    stamp = first.stat().st_mtime_ns
    assert fast.write_wrapper(tmp_path, "/opt/haproxy").stat().st_mtime_ns == stamp
    assert "exec /usr/sbin/haproxy " in fast.write_wrapper(tmp_path, "/usr/sbin/haproxy").read_text()


def test_the_wrapper_fails_closed_when_ray_s_config_is_not_what_it_rewrites(tmp_path):
    """A config whose side listeners the rewrite does not find (Ray changed its template), or no config at all:
    exit 1 with one line, and HAProxy never starts (the stand-in would leave a marker)."""
    marker = tmp_path / "haproxy-ran"
    stand_in = tmp_path / "stand in $(touch x)"  # a path with a space and shell syntax: quoted, never run as code
    stand_in.write_text(f'#!/bin/sh\ntouch "{marker}"\n')
    stand_in.chmod(0o755)
    wrapper = fast.write_wrapper(tmp_path / "serve", str(stand_in))
    env = {"PATH": os.environ["PATH"], fast.STATS_PORT: "9404", fast.METRICS_PORT: "9301"}
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG.format(serving="127.0.0.1").replace("bind *:9404", "bind 10.0.0.1:9404"))
    moved = subprocess.run([str(wrapper), "-db", "-f", str(config)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert moved.returncode == 1 and "no listener on port 9404 to move to 127.0.0.1" in moved.stderr
    missing = subprocess.run([str(wrapper), "-db"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert missing.returncode == 1 and "no config file (-f)" in missing.stderr
    assert not marker.exists() and not (tmp_path / "x").exists()
    config.write_text(CONFIG.format(serving="127.0.0.1"))
    assert subprocess.run([str(wrapper), "-db", "-f", str(config)], env=env, cwd=tmp_path).returncode == 0 and marker.exists()


def test_the_environment_turns_haproxy_on_unless_the_caller_chose(tmp_path):
    chosen = fast.fast_ingress_environment(tmp_path, environ={fast.BINARY: "/usr/sbin/haproxy"})
    assert chosen[fast.HAPROXY] == chosen[fast.THROUGHPUT] == "1" and chosen[fast.DRAIN] == "2"
    assert chosen[fast.RETRY_ON] == "conn-failure empty-response" and chosen[fast.RETRIES] == "3"
    assert chosen[fast.PROXY_CHECK] == "2"  # a dead HAProxy replaced in seconds, not half a minute
    assert fast.BINARY not in chosen  # the caller's binary stays
    assert int(chosen[fast.STATS_PORT]) != int(chosen[fast.METRICS_PORT])
    assert fast.fast_ingress_environment(tmp_path, environ={fast.HAPROXY: "0"}) == {}  # opted out: Serve's own proxy
    pinned = fast.fast_ingress_environment(tmp_path, environ={fast.BINARY: "/usr/sbin/haproxy", fast.STATS_PORT: "8404"})
    assert fast.STATS_PORT not in pinned and fast.METRICS_PORT in pinned


def test_the_variables_last_only_while_ray_starts(tmp_path, monkeypatch):
    monkeypatch.setenv(fast.BINARY, "/usr/sbin/haproxy")
    for name in (fast.HAPROXY, fast.THROUGHPUT, fast.STATS_PORT, fast.METRICS_PORT, fast.DRAIN):
        monkeypatch.delenv(name, raising=False)
    with fast.fast_ingress_for_new_ray(tmp_path) as chosen:
        assert os.environ[fast.HAPROXY] == "1" and os.environ[fast.STATS_PORT] == chosen[fast.STATS_PORT]
    assert fast.HAPROXY not in os.environ and fast.STATS_PORT not in os.environ  # a later `mlray` subprocess picks its own
