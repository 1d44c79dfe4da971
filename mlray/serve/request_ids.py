"""Request ids that prove where they came from: `<nonce>-<rows>-<mac>`.

The nonce is 128 random bits (unguessable); `rows` is how many rows the request had; the MAC (HMAC-SHA256 under
the project's serving secret, cut to 64 bits) binds both to the API key that made the request. So any ingress
replica, including one started after the request, can tell from the id alone whether a label is for a request this
service answered, for a row that request had, and from the key that made it, with no lookup and no shared memory.
"""

from __future__ import annotations

import hashlib
import hmac
import os

REQUEST_ID_PATTERN = r"^[0-9a-f]{32}-[0-9]{1,7}-[0-9a-f]{16}$"


class FeedbackRefused(Exception):
    """A label the service will not store: `status` 404 (no such request or row) or 403 (another key's request)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class RequestIds:
    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("the request-id secret must be at least 128 bits")
        self.secret = secret

    def _mac(self, nonce: str, rows: int, key_hash: str) -> str:
        message = f"{nonce}-{rows}-{key_hash}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:16]

    def issue(self, rows: int, key_hash: str) -> str:
        """A fresh id for a request of `rows` rows made with the key whose hash is `key_hash` ('' without auth)."""
        nonce = os.urandom(16).hex()
        return f"{nonce}-{rows}-{self._mac(nonce, rows, key_hash)}"

    def check(self, request_id: str, row: int, key_hash: str, other_keys: tuple[str, ...] = ()) -> None:
        """Raise FeedbackRefused unless `request_id` was issued here for a request with a row `row`, made with the key
        whose hash is `key_hash`. An id made with one of `other_keys` is 403, any other 404. `request_id` already
        matches REQUEST_ID_PATTERN."""
        nonce, rows_text, mac = request_id.split("-")
        rows = int(rows_text)
        if not hmac.compare_digest(mac, self._mac(nonce, rows, key_hash)):
            if any(hmac.compare_digest(mac, self._mac(nonce, rows, other)) for other in other_keys):
                raise FeedbackRefused(403, f"request {request_id} was made with another API key")
            raise FeedbackRefused(404, f"request {request_id} is not one this service answered")
        if row >= rows:
            raise FeedbackRefused(404, f"request {request_id} had {rows} row(s): there is no row {row}")
