"""Alerts: a log line always, and a JSON POST to `monitor.alert_webhook` when the spec names one (its `${NAME}`
references read here; the URL never appears in a log line, since its path or query carries a token)."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import datetime, timezone

from mlray.errors import UserError
from mlray.spec.secrets import redact_text, redact_webhook, resolve

log = logging.getLogger("mlray.alerts")
WEBHOOK_TIMEOUT_S = 5.0


def alert(project: str, kind: str, message: str, details: dict | None = None, webhook: str | None = None) -> dict:
    """Raise one alert ('drift', 'quality', 'incident', 'job_failed', ...); a webhook that fails is logged, never
    raised (the monitor goes on)."""
    body = {"project": project, "kind": kind, "message": message, "details": details or {},
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    log.warning("mlray alert [%s] %s: %s", project, kind, message)
    if webhook:
        post(webhook, body)
    return body


def post(webhook: str, body: dict) -> None:
    try:
        request = urllib.request.Request(resolve(webhook, "monitor.alert_webhook"),
                                         data=json.dumps(body, default=str).encode(), method="POST",
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S):
            pass
    except (UserError, ValueError, urllib.error.URLError, OSError) as exc:
        log.error("alert webhook %s failed: %s", redact_webhook(webhook), redact_text(str(exc)))
