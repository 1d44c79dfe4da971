"""API keys: stored as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os

KEYS_ENV = "MLRAY_API_KEYS"


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The accepted keys, as hashes: from the spec (already hashed) and MLRAY_API_KEYS (plain, hashed here)."""

    def __init__(self, hashed: list[str], environ: dict[str, str] | None = None):
        environ = os.environ if environ is None else environ
        plain = [k.strip() for k in environ.get(KEYS_ENV, "").split(",") if k.strip()]
        self.hashes = [h.encode() for h in [*hashed, *(hash_key(k) for k in plain)]]

    def __len__(self) -> int:
        return len(self.hashes)

    def accepts(self, authorization: str | None) -> bool:
        """Whether an `Authorization: Bearer <key>` header carries one of the keys (every key compared)."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        offered = hash_key(authorization.removeprefix("Bearer ").strip()).encode()
        found = False
        for known in self.hashes:  # no early exit: the time taken does not tell which key matched
            found |= hmac.compare_digest(offered, known)
        return found
