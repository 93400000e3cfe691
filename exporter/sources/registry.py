"""OCI distribution client (httpx): Bearer token flow from `WWW-Authenticate` (realm, service,
scope), anonymous or with credentials, tokens cached until they expire; Basic where the registry
asks for it; every manifest type in `Accept`; HEAD with the stored ETag first; retries on 5xx and
429; timeouts on everything."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from exporter.analysis.images import (
    ACCEPT,
    ManifestError,
    PlatformImage,
    image_size,
    is_index,
    platform_entries,
)
from exporter.logging import SECRETS
from exporter.sources.errors import (
    AuthError,
    ClientError,
    MalformedResponse,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
)
from exporter.sources.retry import Backoff
from exporter.telemetry import Telemetry

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def endpoint_template(path: str) -> str:
    path = re.sub(r"^/v2/.+/manifests/[^/]+$", "/v2/{name}/manifests/{reference}", path)
    return re.sub(r"^/v2/.+/blobs/[^/]+$", "/v2/{name}/blobs/{digest}", path)


@dataclass
class Head:
    status: int
    digest: str | None
    etag: str | None
    media_type: str | None


class RegistryClient:
    def __init__(
        self,
        base_url: str,
        http: httpx.Client,
        *,
        username: str | None = None,
        password: str | None = None,
        telemetry: Telemetry | None = None,
        max_retries: int = 3,
        backoff: Backoff | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.username = username
        self.password = password
        SECRETS.add(password)
        self.telemetry = telemetry
        self.max_retries = max_retries
        self.backoff = backoff or Backoff()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._basic = False
        self._lock = threading.Lock()

    # -- auth ----------------------------------------------------------------------------------
    def _count(self, endpoint: str, code: str) -> None:
        if self.telemetry is not None:
            self.telemetry.api_requests.labels("registry", endpoint, code).inc()

    def _auth_header(self, scope: str) -> dict[str, str]:
        with self._lock:
            if self._basic and self.username is not None:
                return {"Authorization": "Basic " + _basic(self.username, self.password or "")}
            token = self._tokens.get(scope)
        if token is not None and token[1] > time.time():
            return {"Authorization": f"Bearer {token[0]}"}
        return {}

    def _answer_challenge(self, header: str, scope: str) -> None:
        scheme = header.split(" ", 1)[0].lower()
        if scheme == "basic":
            if self.username is None:
                raise AuthError(
                    "the registry wants Basic credentials; none are configured", status=401
                )
            with self._lock:
                self._basic = True
            return
        if scheme != "bearer":
            raise AuthError(f"unsupported registry auth scheme {scheme!r}", status=401)
        params = dict(_CHALLENGE_PARAM.findall(header))
        realm = params.get("realm")
        if not realm:
            raise AuthError("Bearer challenge without a realm", status=401)
        query = {"service": params.get("service", ""), "scope": params.get("scope") or scope}
        auth = (self.username, self.password or "") if self.username else None
        try:
            response = self.http.get(realm, params=query, auth=auth)
        except httpx.TransportError as exc:
            self._count("token", "error")
            raise TransportError(f"registry token: {type(exc).__name__}") from None
        self._count("token", str(response.status_code))
        if response.status_code in (401, 403):
            raise AuthError(
                f"registry token request answered {response.status_code}",
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise ServerError(
                f"registry token request answered {response.status_code}",
                status=response.status_code,
            )
        try:
            body = response.json()
            token = str(body.get("token") or body.get("access_token"))
            expires_in = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            raise MalformedResponse("registry token response is not JSON") from None
        if not token or token == "None":
            raise MalformedResponse("registry token response has no token")
        SECRETS.add(token)
        with self._lock:
            # Ten seconds of slack so a token isn't used at the edge of its life.
            self._tokens[query["scope"]] = (token, time.time() + max(1.0, expires_in - 10))

    # -- requests ------------------------------------------------------------------------------
    def request(
        self, method: str, path: str, *, name: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        scope = f"repository:{name}:pull"
        url = f"{self.base_url}{path}"
        endpoint = endpoint_template(path)
        attempt = 0
        challenged = False
        while True:
            try:
                response = self.http.request(
                    method,
                    url,
                    headers={"Accept": ACCEPT, **(headers or {}), **self._auth_header(scope)},
                )
            except httpx.TransportError as exc:
                self._count(endpoint, "error")
                if attempt < self.max_retries:
                    self.backoff.sleep(self.backoff.delay(attempt))
                    attempt += 1
                    continue
                raise TransportError(f"registry {endpoint}: {type(exc).__name__}") from None
            self._count(endpoint, str(response.status_code))
            status = response.status_code
            if status == 401 and not challenged:
                challenged = True
                self._answer_challenge(response.headers.get("www-authenticate", ""), scope)
                continue
            if status == 429 or status >= 500:
                wait = self.backoff.delay(attempt)
                if status == 429:
                    with contextlib.suppress(ValueError):
                        wait = max(wait, float(response.headers.get("retry-after", "")))
                if attempt < self.max_retries and wait <= self.backoff.max_inline_wait:
                    self.backoff.sleep(wait)
                    attempt += 1
                    continue
                if status == 429:
                    raise RateLimited(
                        f"registry {endpoint}: HTTP 429", until=time.time() + wait, status=429
                    )
                raise ServerError(f"registry {endpoint}: HTTP {status}", status=status)
            if status in (401, 403):
                raise AuthError(f"registry {endpoint}: HTTP {status}", status=status)
            if status == 404:
                raise NotFound(
                    f"registry {endpoint}: HTTP 404 ({_error_code(response)})", status=404
                )
            if status >= 400:
                raise ClientError(
                    f"registry {endpoint}: HTTP {status} ({_error_code(response)})", status=status
                )
            return response

    def head(self, name: str, reference: str, etag: str | None = None) -> Head:
        headers = {"If-None-Match": etag} if etag else {}
        response = self.request(
            "HEAD", f"/v2/{name}/manifests/{reference}", name=name, headers=headers
        )
        return Head(
            response.status_code,
            response.headers.get("docker-content-digest"),
            response.headers.get("etag"),
            response.headers.get("content-type"),
        )

    def manifest(self, name: str, reference: str) -> tuple[dict[str, Any], str | None, str]:
        response = self.request("GET", f"/v2/{name}/manifests/{reference}", name=name)
        try:
            data = response.json()
        except ValueError:
            raise MalformedResponse(f"manifest {name}:{reference} is not JSON") from None
        if not isinstance(data, dict):
            raise MalformedResponse(f"manifest {name}:{reference} is not an object")
        digest = response.headers.get("docker-content-digest") or reference
        return data, response.headers.get("content-type"), digest

    def platforms(self, name: str, reference: str) -> list[PlatformImage]:
        """Each platform's size and layers; one GET for a single manifest, 1 + N for an index."""
        data, content_type, digest = self.manifest(name, reference)
        try:
            if not is_index(data, content_type):
                platform = "unknown/unknown"
                return [image_size(data, platform, digest)]
            found = []
            for platform, child in platform_entries(data):
                manifest, _, child_digest = self.manifest(name, child)
                found.append(image_size(manifest, platform, child_digest))
            return found
        except ManifestError as exc:
            raise MalformedResponse(f"{name}:{reference}: {exc}") from None


def _basic(username: str, password: str) -> str:
    import base64

    return base64.b64encode(f"{username}:{password}".encode()).decode()


def _error_code(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or [{}]
        return str(errors[0].get("code", "")) or "no code"
    except (ValueError, AttributeError, IndexError):
        return "no code"


def parse_reference(ref: str) -> tuple[str, str, str]:
    """`[http://]HOST[:PORT]/NAME:TAG` or `…@DIGEST` → (base URL, name, reference)."""
    scheme = "https"
    if ref.startswith(("http://", "https://")):
        scheme, ref = ref.split("://", 1)
    host, _, rest = ref.partition("/")
    if not host or not rest:
        raise ValueError(f"{ref!r} is not HOST/NAME:TAG")
    if "@" in rest:
        name, reference = rest.split("@", 1)
    else:
        name, _, reference = (
            rest.rpartition(":") if ":" in rest.rsplit("/", 1)[-1] else (rest, "", "latest")
        )
    if not name or not reference:
        raise ValueError(f"{ref!r} is not HOST/NAME:TAG")
    if scheme == "http":
        from exporter.config import is_loopback

        if not is_loopback(urlsplit(f"http://{host}").hostname or ""):
            raise ValueError("plain http is allowed for loopback registries only")
    return f"{scheme}://{host}", name, reference
