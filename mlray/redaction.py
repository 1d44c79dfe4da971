"""Hiding credentials in free text: the one pattern below every module that writes an error or a log line."""

from __future__ import annotations

import re

REDACTED = "***"
# `scheme://user:password@` in free text: an error message or a log line naming a URI
URI_CREDENTIALS = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)(?P<secret>[^\s@/]+)(?P<at>@)")


def redact_credentials(text: str) -> str:
    """`text` with the password of every URI in it replaced (`scheme://user:***@host`)."""
    return URI_CREDENTIALS.sub(lambda m: m["head"] + REDACTED + m["at"], text)
