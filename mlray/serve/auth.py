"""API keys: stored as SHA-256 hashes, compared in constant time, replaceable while the service runs."""

from __future__ import annotations

import hashlib
import hmac
import os
import re

from mlray.errors import UserError

KEYS_ENV = "MLRAY_API_KEYS"
MIN_KEY_LENGTH = 32  # characters: a key this long from `secrets.token_urlsafe(32)` carries 256 bits
BEARER = re.compile(r"^\s*bearer\s+(?P<key>\S+)\s*$", re.IGNORECASE)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def checked_key(key: str, where: str) -> str:
    """A plain key fit to be accepted; a short one is refused in one line (never echoing it)."""
    key = key.strip()
    if len(key) < MIN_KEY_LENGTH:
        raise UserError(f"{where}: an API key needs at least {MIN_KEY_LENGTH} characters, got {len(key)} "
                        f"(make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return key


def fingerprint(hashed: str) -> str:
    """A short, safe name for one key hash (audit entries and status show this, never the hash or the key)."""
    return hashed[:15] + "…"


def revoked(accepted: set[str], names: list[str]) -> set[str]:
    """The accepted hashes that `names` (each a hash or a fingerprint) name; a name matching none, or several, is
    refused in one line."""
    found = set()
    for name in names:
        prefix = name.strip().removesuffix("…")
        matches = {h for h in accepted if h.startswith(prefix)} if len(prefix) >= len("sha256:") + 8 else set()
        if len(matches) != 1:
            why = "no accepted key" if not matches else f"{len(matches)} accepted keys"
            raise UserError(f"{why} match {fingerprint(prefix) if len(prefix) > 15 else prefix!r} "
                            f"(see `mlray keys list`; a fingerprint is 'sha256:' and at least 8 hex digits)")
        found |= matches
    return found


class KeyRing:
    """The accepted keys, as hashes: from the spec (already hashed) and MLRAY_API_KEYS (plain, hashed here) of the
    caller's environment; `environ={}` for hashes alone (what an ingress replica is pushed)."""

    def __init__(self, hashed: list[str], environ: dict[str, str] | None = None):
        environ = os.environ if environ is None else environ
        plain = [checked_key(k, KEYS_ENV) for k in environ.get(KEYS_ENV, "").split(",") if k.strip()]
        self.hashes = sorted(set([*hashed, *(hash_key(k) for k in plain)]))
        self._encoded = [h.encode() for h in self.hashes]

    @classmethod
    def for_serving(cls, serve_spec) -> KeyRing:
        """The deploying process's keys: the spec's hashes and MLRAY_API_KEYS (none is fine when the control plane
        holds some already: `mlray keys add`)."""
        return cls(serve_spec.api_keys)

    def __len__(self) -> int:
        return len(self.hashes)

    def accepts(self, authorization: str | None) -> bool:
        """Whether an `Authorization: Bearer <key>` header carries one of the keys (every key compared)."""
        return self.match(authorization) is not None

    def match(self, authorization: str | None) -> str | None:
        """The hash of the key an `Authorization: Bearer <key>` header carries, when it is one of the keys; else None.
        Every key is compared: the time taken does not tell which one matched."""
        bearer = BEARER.match(authorization or "")
        if bearer is None:
            return None
        offered = hash_key(bearer["key"])
        encoded, found = offered.encode(), False
        for known in self._encoded:
            found |= hmac.compare_digest(encoded, known)
        return offered if found else None
