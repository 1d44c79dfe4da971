"""Starting the drift monitor as the CLI and the jobs do: the spec is handed over to the control plane first, since
every loop (the monitor included, after a restart too) runs on the spec revision the control plane holds."""

from __future__ import annotations

from mlray.audit import default_actor
from mlray.monitor import actor as monitor_actor
from mlray.serve import control
from mlray.spec import ProjectSpec


def start(spec: ProjectSpec, actor: str | None = None):
    """Hand `spec` over, then start the monitor on it (or hand it to the running one); its handle."""
    control.client(spec).hand_over_spec(actor or default_actor())
    return monitor_actor.start(spec)
