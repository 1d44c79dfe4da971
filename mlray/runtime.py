"""Connecting to Ray as the spec's platform section says: a cluster address, a Ray already running on this machine,
or a new embedded one.

With `ray_address: null` a command first joins what runs here: the embedded Ray of another mlray command of the
same project (its address is left in the state folder while it lives, e.g. `mlray deploy` in another shell), or
a `ray start` cluster (`ray.init()` finds it by itself). Only then does it start an embedded Ray.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

from mlray.errors import UserError
from mlray.fast_ingress import fast_ingress_for_new_ray
from mlray.spec import PlatformSpec, ProjectSpec

log = logging.getLogger(__name__)
ADDRESS_FILE = "ray-address.json"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
NAMESPACE = "mlray"  # the Ray namespace of every named mlray actor (control plane, rollout, monitor)


def control_plane_name(spec: ProjectSpec) -> str:
    """`<project>-control-<digest of the lake root>`: the state lives under the lake root, so two projects of one name
    with lakes of their own (a test session, two teams on one cluster) each get their own owner."""
    return f"{spec.name}-control-{hashlib.sha256(spec.platform.lake_uri.encode()).hexdigest()[:8]}"


def connect(platform: PlatformSpec, quiet: bool = True) -> None:
    """Start (or join) Ray once per process; a no-op when Ray is already up."""
    # Ray: imported only once a command needs the cluster; the CLI imports this module and must start without Ray
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        address = platform.ray_address or os.environ.get("RAY_ADDRESS") or embedded_address(platform)
        if address:
            join(address, quiet)
        else:
            log.info("starting an embedded local Ray (or joining a `ray start` cluster of this machine)")
            context = start_local_ray(Path(platform.state_dir), num_cpus=platform.num_cpus, include_dashboard=None,
                                      logging_level=logging.ERROR if quiet else logging.INFO, log_to_driver=not quiet)
            if _started_here():
                _leave_address(platform, context.address_info["gcs_address"])
    context = DataContext.get_current()
    if quiet:  # the CLI draws its own progress; Ray Data's bars and per-dataset logs would interleave
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context.enable_progress_bars = False
        context.print_on_execution_start = False


def join(address: str, quiet: bool) -> None:
    """`ray.init` of a running cluster; one that cannot be reached is a one-line error, not a traceback."""
    import ray  # Ray: only once the process joins a cluster (this module stays Ray-free for the CLI)

    log.info("joining the Ray cluster at %s", address)
    try:
        ray.init(address=address, logging_level=logging.WARNING if quiet else logging.INFO, log_to_driver=not quiet)
    except (ConnectionError, TimeoutError, ray.exceptions.AuthenticationError) as exc:
        raise UserError(f"cannot join the Ray cluster at {address}: {str(exc).strip().splitlines()[0]} (with "
                        f"token authentication, this shell needs RAY_AUTH_MODE=token and the cluster's token in "
                        f"{token_path()} or RAY_AUTH_TOKEN)") from None


def start_local_ray(state_dir: Path, **init_options):
    """`ray.init` of a Ray on this machine whose processes start with Serve's fast ingress (`mlray.fast_ingress`);
    the tests and benchmarks start theirs with it too, so they measure what users get. Ray's token authentication
    stays on (a new local Ray's default), with a token file only its owner can read."""
    import ray  # Ray: only once the process starts one (this module stays Ray-free for the CLI)

    protect_token_file()
    with fast_ingress_for_new_ray(state_dir / "serve"):
        return ray.init(**init_options)


def token_path() -> Path:
    """Where Ray reads its cluster token from (RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def protect_token_file() -> None:
    """The token file at mode 0600, created so when missing (Ray would write it readable by every local user, who
    could then submit a job: code run as this user). Nothing to do when the token comes from RAY_AUTH_TOKEN or
    authentication is disabled."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get(AUTH_MODE_ENV, "token").lower() != "token":
        return
    # Ray: only when a token file must be written (this module stays Ray-free for the CLI)
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    path = token_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        return
    with os.fdopen(descriptor, "w") as out:
        out.write(generate_new_authentication_token())


def use_token_auth() -> None:
    """Make this process a token-authenticated Ray client before it joins: Ray reads its mode once per process, so
    setting the variable is not enough once `ray` is imported (Ray's own local start refreshes it the same way)."""
    # Ray: only when joining with a token (this module stays Ray-free for the CLI)
    from ray._private.authentication.authentication_token_setup import _enable_token_auth

    if os.environ.get(AUTH_MODE_ENV) != "token":
        _enable_token_auth()


def _started_here() -> bool:
    """Whether this process started the Ray it is connected to (rather than joining a `ray start` cluster)."""
    import ray  # Ray: asked only of a process connected to Ray (this module stays Ray-free for the CLI)

    return bool(getattr(ray._private.worker._global_node, "head", False))


def embedded_address(platform: PlatformSpec) -> str | None:
    """The address of a live embedded Ray another mlray process of this project started, or None."""
    path = Path(platform.state_dir) / ADDRESS_FILE
    try:
        found = json.loads(path.read_text())
        os.kill(int(found["pid"]), 0)  # raises when that process is gone
    except (OSError, ValueError, KeyError):
        return None
    if found.get("auth_mode") == "token" and os.environ.get(AUTH_MODE_ENV) is None:
        use_token_auth()  # the embedded Ray checks a token: this shell need not have been told
    return found["address"]


def _leave_address(platform: PlatformSpec, address: str) -> None:
    """Leave this embedded Ray's address in the state folder while this process lives, for other commands to join."""
    path = Path(platform.state_dir) / ADDRESS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"address": address, "pid": os.getpid(), "auth_mode": os.environ.get(AUTH_MODE_ENV)}))

    def forget() -> None:
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass

    atexit.register(forget)


def leave(code: int) -> None:
    """Exit with `code` once Python's exit handlers (Ray's shutdown among them) have run, skipping the native
    destructors after them: deltalake's Rust runtime can abort a finished process there ("terminate called without
    an active exception", delta-io/delta-rs#2184), which would turn a command that succeeded into a crash."""
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)
