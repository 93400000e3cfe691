"""GitHub authentication: a token (PAT or GITHUB_TOKEN), or a GitHub App installation token
minted from an RS256 JWT and refreshed before it expires."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Protocol

import httpx
import jwt

from exporter.logging import SECRETS
from exporter.sources.errors import AuthError, TransportError
from exporter.timeutil import parse_timestamp

# The REST API version every request asks for (X-GitHub-Api-Version).
API_VERSION = "2022-11-28"


class Auth(Protocol):
    identity: str

    def headers(self) -> dict[str, str]: ...

    def invalidate(self) -> None: ...


class TokenAuth:
    def __init__(self, token: str) -> None:
        SECRETS.add(token)
        self._token = token
        # ETags are cached per identity, never keyed by the secret itself.
        self.identity = "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> None:
        """A static token can't be refreshed."""


class AppAuth:
    """Installation tokens for a GitHub App; refreshed `refresh_before` seconds before expiry."""

    def __init__(
        self,
        app_id: int,
        installation_id: int,
        private_key: str,
        api_url: str,
        *,
        http: httpx.Client,
        refresh_before: float = 300.0,
    ) -> None:
        SECRETS.add(private_key)
        self.app_id = app_id
        self.installation_id = installation_id
        self._key = private_key
        self._api_url = api_url.rstrip("/")
        self._http = http
        self._refresh_before = refresh_before
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self.identity = f"app:{app_id}:{installation_id}"

    def app_jwt(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        # iat 60 s in the past allows for clock drift; GitHub accepts at most 10 minutes.
        payload = {"iat": int(now) - 60, "exp": int(now) + 540, "iss": str(self.app_id)}
        token = jwt.encode(payload, self._key, algorithm="RS256")
        SECRETS.add(token, rotating=True, expires_at=int(now) + 540)
        return token

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._token is None or time.time() >= self._expires - self._refresh_before:
                self._mint()
            return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _mint(self) -> None:
        url = f"{self._api_url}/app/installations/{self.installation_id}/access_tokens"
        try:
            response = self._http.post(
                url,
                headers={
                    "Authorization": f"Bearer {self.app_jwt()}",
                    "Accept": "application/vnd.github+json",
                    "X-GitHub-Api-Version": API_VERSION,
                },
            )
        except httpx.TransportError as exc:
            raise TransportError(f"installation token: {type(exc).__name__}") from None
        if response.status_code != 201:
            raise AuthError(
                f"installation token request answered {response.status_code}",
                status=response.status_code,
            )
        try:
            body = response.json()
            token = str(body["token"])
        except (ValueError, KeyError, TypeError):
            raise AuthError("installation token response is malformed") from None
        self._token = token
        self._expires = parse_timestamp(body.get("expires_at")) or (time.time() + 3600)
        SECRETS.add(token, rotating=True, expires_at=self._expires)


def read_private_key(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthError(
            f"cannot read the GitHub App private key file {path}: {exc.strerror}"
        ) from None
