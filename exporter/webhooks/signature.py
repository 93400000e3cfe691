"""X-Hub-Signature-256: HMAC-SHA256 of the raw body with the webhook secret, compared in constant
time. The SHA-1 `X-Hub-Signature` alone is not accepted."""

from __future__ import annotations

import hashlib
import hmac
import re

PREFIX = "sha256="
# What GitHub sends; anything else (other characters, non-ASCII bytes) is a bad signature.
_FORMAT = re.compile(r"sha256=[0-9a-f]{64}")


def signature(secret: bytes, body: bytes) -> str:
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether `header` signs `body`. Never raises: a header GitHub would not send (non-ASCII
    included, on which compare_digest over str raises) is simply not valid."""
    if header is None or _FORMAT.fullmatch(header.strip()) is None:
        return False
    return hmac.compare_digest(signature(secret, body).encode(), header.strip().encode("ascii"))
