"""Connecting to Ray as the spec's platform section says: a cluster address, or an embedded local Ray."""

from __future__ import annotations

import logging
import os

from mlray.spec import PlatformSpec

log = logging.getLogger(__name__)


def connect(platform: PlatformSpec, quiet: bool = True) -> None:
    """Start (or join) Ray once per process; a no-op when Ray is already up."""
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        address = platform.ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            log.info("joining the Ray cluster at %s", address)
            ray.init(address=address, logging_level=logging.WARNING if quiet else logging.INFO,
                     log_to_driver=not quiet)
        else:
            log.info("starting an embedded local Ray")
            ray.init(num_cpus=platform.num_cpus, include_dashboard=None,
                     logging_level=logging.ERROR if quiet else logging.INFO, log_to_driver=not quiet)
    context = DataContext.get_current()
    if quiet:  # the CLI draws its own progress; Ray Data's bars and per-dataset logs would interleave
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context.enable_progress_bars = False
        context.print_on_execution_start = False
