"""API keys: stored as SHA-256 hashes, compared in constant time, replaceable while the service runs."""

from __future__ import annotations

import hashlib
import hmac
import os

from mlray.errors import UserError

KEYS_ENV = "MLRAY_API_KEYS"


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def fingerprint(hashed: str) -> str:
    """A short, safe name for one key hash (audit entries and status show this, never the hash or the key)."""
    return hashed[:15] + "…"


class KeyRing:
    """The accepted keys, as hashes: from the spec (already hashed) and MLRAY_API_KEYS (plain, hashed here) of the
    caller's environment; `environ={}` for hashes alone (what an ingress replica is pushed)."""

    def __init__(self, hashed: list[str], environ: dict[str, str] | None = None):
        environ = os.environ if environ is None else environ
        plain = [k.strip() for k in environ.get(KEYS_ENV, "").split(",") if k.strip()]
        self.hashes = sorted(set([*hashed, *(hash_key(k) for k in plain)]))
        self._encoded = [h.encode() for h in self.hashes]

    @classmethod
    def for_serving(cls, serve_spec) -> KeyRing:
        """The deploying process's keys; refused when auth is on and there are none."""
        ring = cls(serve_spec.api_keys)
        if serve_spec.auth and not len(ring):
            raise UserError("serve.auth is on but there are no API keys: set serve.api_keys (hashes) or MLRAY_API_KEYS")
        return ring

    def __len__(self) -> int:
        return len(self.hashes)

    def accepts(self, authorization: str | None) -> bool:
        """Whether an `Authorization: Bearer <key>` header carries one of the keys (every key compared)."""
        return self.match(authorization) is not None

    def match(self, authorization: str | None) -> str | None:
        """The hash of the key an `Authorization: Bearer <key>` header carries, when it is one of the keys; else None.
        Every key is compared: the time taken does not tell which one matched."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        offered = hash_key(authorization.removeprefix("Bearer ").strip())
        encoded, found = offered.encode(), False
        for known in self._encoded:
            found |= hmac.compare_digest(encoded, known)
        return offered if found else None
