"""The spec's secrets: where they may come from, how they are read, and how every stored copy hides them.

Three fields can hold a secret: `platform.storage_options` (those whose name says credential: a secret, key id,
token, password, SAS, service account; a region or an endpoint is not one), `platform.mlflow_tracking_uri`
(a password in the URI) and `monitor.alert_webhook` (a token in the URL's path or query). Each may name environment
variables as `${NAME}`, read where the value is used: on a cluster, from the node that uses it, where the cluster
keeps its secrets. A literal secret works in the process that loaded the spec, but no copy mlray stores (MLflow runs,
model packages, the retraining job's spec, audit entries, incidents) holds it: `redacted_document` replaces it with
`***`, and a spec read back from such a copy leaves the redacted values out (the node's own credentials apply).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlray.errors import UserError
from mlray.redaction import REDACTED, URI_CREDENTIALS, redact_credentials

log = logging.getLogger(__name__)

MIN_SCRUBBED = 8  # shorter values (a path such as /alerts) are not scrubbed from free text
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# storage options that hold a credential (the others, a region, an endpoint, a locking provider, must reach a job)
SECRET_OPTION = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|KEY_ID|ACCOUNT_KEY|PRIVATE|CREDENTIAL|SAS|SIGNATURE|"
                           r"SERVICE_ACCOUNT", re.IGNORECASE)


def resolve(value: str | None, where: str) -> str | None:
    """`value` with each `${NAME}` replaced by that environment variable of this process; an unset one is refused."""
    if value is None:
        return None

    def variable(match: re.Match) -> str:
        found = os.environ.get(match.group(1))
        if found is None:
            raise UserError(f"{where} names ${{{match.group(1)}}}, which is not set in this process's environment")
        return found

    return ENV_REFERENCE.sub(variable, value)


def is_reference(value: str) -> bool:
    """Whether `value` names its secret (`${NAME}`, possibly inside text) instead of holding it."""
    return bool(ENV_REFERENCE.search(value))


def redact_uri(uri: str | None) -> str | None:
    """The URI with a literal password replaced (`user:***@host`); a `${NAME}` password stays, since it is a name."""
    if not uri:
        return uri
    return URI_CREDENTIALS.sub(lambda m: m["head"] + (m["secret"] if is_reference(m["secret"]) else REDACTED) + m["at"],
                               uri)


def redact_webhook(url: str | None) -> str | None:
    """Scheme and host only: a webhook's path and query carry its token (Slack, Teams, PagerDuty)."""
    if not url or is_reference(url):
        return url
    parts = urlsplit(redact_uri(url))
    return urlunsplit((parts.scheme, parts.netloc, "/" + REDACTED if parts.path.strip("/") or parts.query else "",
                       "", ""))


def redacted_document(spec) -> dict[str, Any]:
    """The spec as JSON with every literal secret replaced by `***`: the only form mlray stores or ships."""
    doc = spec.model_dump(mode="json")
    platform, monitor = doc["platform"], doc["monitor"]
    platform["storage_options"] = {k: REDACTED if SECRET_OPTION.search(k) and not is_reference(v) else v
                                   for k, v in platform["storage_options"].items()}
    platform["mlflow_tracking_uri"] = redact_uri(platform["mlflow_tracking_uri"])
    monitor["alert_webhook"] = redact_webhook(monitor["alert_webhook"])
    return doc


def without_redacted(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored spec document made usable on this node: redacted values are left out, so what the node has
    (environment, instance role) applies; a tracking URI loses its redacted credentials (MLflow then reads
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)."""
    platform, monitor = dict(doc.get("platform") or {}), dict(doc.get("monitor") or {})
    options = platform.get("storage_options") or {}
    if dropped := sorted(k for k, v in options.items() if v == REDACTED):
        log.warning("the stored spec's storage_options %s were redacted: this node's own credentials apply", dropped)
        platform["storage_options"] = {k: v for k, v in options.items() if v != REDACTED}
    uri = platform.get("mlflow_tracking_uri")
    if uri and f":{REDACTED}@" in uri:
        parts = urlsplit(uri)
        platform["mlflow_tracking_uri"] = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if (monitor.get("alert_webhook") or "").endswith("/" + REDACTED):
        log.warning("the stored spec's monitor.alert_webhook was redacted: alerts are logged, not posted")
        monitor["alert_webhook"] = None
    return doc | {"platform": platform, "monitor": monitor}


def restored(doc: dict[str, Any], held) -> dict[str, Any]:
    """A stored spec document with each redacted value taken from `held` (the spec a process already runs on) where
    `held`'s value is redacted to the same text: an actor moving to a new revision keeps the secrets it was handed.
    The values left redacted are dropped by `without_redacted`."""
    mine, hidden = held.model_dump(mode="json"), redacted_document(held)
    platform, monitor = dict(doc.get("platform") or {}), dict(doc.get("monitor") or {})
    options = dict(platform.get("storage_options") or {})
    for name, value in options.items():
        if value == REDACTED and hidden["platform"]["storage_options"].get(name) == REDACTED:
            options[name] = mine["platform"]["storage_options"][name]
    platform["storage_options"] = options
    for where, section, name in (("platform", platform, "mlflow_tracking_uri"), ("monitor", monitor, "alert_webhook")):
        value = section.get(name)
        if value and REDACTED in value and hidden[where][name] == value:
            section[name] = mine[where][name]
    return doc | {"platform": platform, "monitor": monitor}


def secret_values(spec) -> list[str]:
    """Every secret this spec holds or resolves to, longest first (to scrub from text this process writes)."""
    platform, webhook = spec.platform, spec.monitor.alert_webhook
    secret = [v for k, v in platform.storage_options.items() if SECRET_OPTION.search(k)]
    values = [*secret, *_resolved_or_none(secret)]
    for uri in (platform.mlflow_tracking_uri, *_resolved_or_none([platform.mlflow_tracking_uri])):
        match = URI_CREDENTIALS.search(uri or "")
        values += [match["secret"]] if match else []
    for url in (webhook, *_resolved_or_none([webhook])):
        parts = urlsplit(url or "")
        values += [p for p in (parts.path.strip("/"), parts.query) if p]
    return sorted({v for v in values if v and len(v) >= MIN_SCRUBBED and not is_reference(v)}, key=len, reverse=True)


def _resolved_or_none(values) -> list[str]:
    found = []
    for value in values:
        try:
            found.append(resolve(value, "secret"))
        except UserError:
            continue
    return [v for v in found if v]


def redact_text(text: str, spec=None) -> str:
    """Free text (an error message, a log line) with URI passwords and, given the spec, each of its secrets hidden."""
    text = redact_credentials(text)
    for value in secret_values(spec) if spec is not None else []:
        text = text.replace(value, REDACTED)
    return text
