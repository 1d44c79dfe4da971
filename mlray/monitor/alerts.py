"""Alerts: a log line always, and a JSON POST to `monitor.alert_webhook` when the spec names one."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import datetime, timezone

log = logging.getLogger("mlray.alerts")
WEBHOOK_TIMEOUT_S = 5.0


def alert(project: str, kind: str, message: str, details: dict | None = None, webhook: str | None = None) -> dict:
    """Raise one alert ('drift', 'quality', 'incident', 'job_failed', ...); a webhook that fails is logged, never
    raised (the monitor goes on)."""
    body = {"project": project, "kind": kind, "message": message, "details": details or {},
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    log.warning("mlray alert [%s] %s: %s", project, kind, message)
    if webhook:
        request = urllib.request.Request(webhook, data=json.dumps(body, default=str).encode(), method="POST",
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S):
                pass
        except (urllib.error.URLError, OSError) as exc:
            log.error("alert webhook %s failed: %s", webhook, exc)
    return body
