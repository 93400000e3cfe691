"""X-Hub-Signature-256: HMAC-SHA256 of the raw body with the webhook secret, compared in constant
time. The SHA-1 `X-Hub-Signature` alone is not accepted."""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "sha256="


def signature(secret: bytes, body: bytes) -> str:
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith(PREFIX):
        return False
    return hmac.compare_digest(signature(secret, body), header.strip())
