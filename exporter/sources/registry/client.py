"""OCI distribution client: Bearer token flow from `WWW-Authenticate` (realm, service, scope),
anonymous or with credentials, tokens cached until they expire; Basic where the registry asks for
it; every manifest type in `Accept`; HEAD with the stored ETag first. Retries, the deadline and the
body cap come from the shared HTTP plumbing, as for GitHub."""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from exporter.analysis.images import (
    ACCEPT,
    ManifestError,
    PlatformImage,
    image_size,
    is_index,
    platform_entries,
)
from exporter.config import is_loopback
from exporter.logging import SECRETS
from exporter.payloads.registry import Manifest, TokenAnswer, parse_manifest
from exporter.sources.errors import (
    AuthError,
    ClientError,
    MalformedResponse,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
)
from exporter.sources.http import RetryPolicy, deadline, read_capped
from exporter.telemetry import Telemetry

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
# Registries refuse manifests over 4 MiB (the distribution spec's suggested limit).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_INLINE_WAIT = 60.0
# Platforms read per index: real multi-platform images have a handful.
MAX_PLATFORMS = 16


def endpoint_template(path: str) -> str:
    path = re.sub(r"^/v2/.+/manifests/[^/]+$", "/v2/{name}/manifests/{reference}", path)
    return re.sub(r"^/v2/.+/blobs/[^/]+$", "/v2/{name}/blobs/{digest}", path)


@dataclass
class Head:
    status: int
    digest: str | None
    etag: str | None


@dataclass
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes


@dataclass
class Platforms:
    images: list[PlatformImage]
    cut: int = 0  # platforms beyond MAX_PLATFORMS, not read


class _Challenged(AuthError):
    """A 401 with a challenge that was answered: try again with the token."""


class RegistryClient:
    def __init__(
        self,
        base_url: str,
        http: httpx.Client,
        *,
        username: str | None = None,
        password: str | None = None,
        telemetry: Telemetry | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.username = username
        self.password = password
        SECRETS.add(password)
        self.telemetry = telemetry
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
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
        realm = params.get("realm", "")
        parts = urlsplit(realm)
        if parts.scheme != "https" and not (
            parts.scheme == "http" and is_loopback(parts.hostname or "")
        ):
            raise AuthError("Bearer challenge without an https realm", status=401)
        query = {"service": params.get("service", ""), "scope": params.get("scope") or scope}
        answer = self._token(realm, query)
        with self._lock:
            # Ten seconds of slack so a token isn't used at the edge of its life.
            self._tokens[query["scope"]] = (answer[0], time.time() + max(1.0, answer[1] - 10))

    def _token(self, realm: str, query: dict[str, str]) -> tuple[str, float]:
        auth = (self.username, self.password or "") if self.username else None
        try:
            with (
                deadline(self.timeout),
                self.http.stream("GET", realm, params=query, auth=auth) as response,
            ):
                body = read_capped(response, 64 * 1024, "registry token")
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
            token = TokenAnswer.model_validate_json(body)
        except ValidationError:
            raise MalformedResponse("registry token response is not a token answer") from None
        if not token.value:
            raise MalformedResponse("registry token response has no token")
        # Cached per repository scope until it expires: scrubbed as long as it may be used.
        SECRETS.add(token.value, rotating=True, expires_at=time.time() + token.expires_in)
        return token.value, token.expires_in

    # -- requests ------------------------------------------------------------------------------
    def _send(
        self, method: str, path: str, name: str, headers: dict[str, str] | None, challenge: bool
    ) -> _Answer:
        scope = f"repository:{name}:pull"
        endpoint = endpoint_template(path)
        request_headers = {"Accept": ACCEPT, **(headers or {}), **self._auth_header(scope)}
        try:
            with (
                deadline(self.timeout),
                self.http.stream(
                    method, f"{self.base_url}{path}", headers=request_headers
                ) as response,
            ):
                body = (
                    b"" if method == "HEAD" else read_capped(response, MAX_MANIFEST_BYTES, endpoint)
                )
                answer = _Answer(response.status_code, response.headers, body)
        except httpx.TransportError as exc:
            self._count(endpoint, "error")
            raise TransportError(f"registry {endpoint}: {type(exc).__name__}") from None
        self._count(endpoint, str(answer.status))
        if answer.status == 401 and challenge:
            self._answer_challenge(answer.headers.get("www-authenticate", ""), scope)
            raise _Challenged("challenge answered", status=401)
        _raise_for(endpoint, answer)
        return answer

    def _decide(self, exc: Exception) -> bool | float:
        if isinstance(exc, RateLimited):
            wait = exc.until - time.time()
            return max(0.0, wait) if wait <= MAX_INLINE_WAIT else False
        return isinstance(exc, ServerError | TransportError)

    def request(
        self, method: str, path: str, *, name: str, headers: dict[str, str] | None = None
    ) -> _Answer:
        """With retries; a 401 challenge is answered once (a token, or Basic) and asked again."""
        try:
            return self.retry.call(
                self._decide, lambda: self._send(method, path, name, headers, challenge=True)
            )
        except _Challenged:
            return self.retry.call(
                self._decide, lambda: self._send(method, path, name, headers, challenge=False)
            )

    def head(self, name: str, reference: str, etag: str | None = None) -> Head:
        headers = {"If-None-Match": etag} if etag else {}
        answer = self.request(
            "HEAD", f"/v2/{name}/manifests/{reference}", name=name, headers=headers
        )
        return Head(
            answer.status, answer.headers.get("docker-content-digest"), answer.headers.get("etag")
        )

    def manifest(self, name: str, reference: str) -> tuple[Manifest, str | None, str]:
        answer = self.request("GET", f"/v2/{name}/manifests/{reference}", name=name)
        what = f"manifest {name}:{reference[:80]}"
        try:
            data = json.loads(answer.body)
        except (ValueError, RecursionError):
            raise MalformedResponse(f"{what} is not JSON") from None
        digest = answer.headers.get("docker-content-digest") or reference
        return parse_manifest(data, what), answer.headers.get("content-type"), digest

    def platforms(self, name: str, reference: str) -> Platforms:
        """Each platform's size and layers; one GET for a single manifest, 1 + N for an index
        (at most MAX_PLATFORMS)."""
        manifest, content_type, digest = self.manifest(name, reference)
        try:
            if not is_index(manifest, content_type):
                return Platforms([image_size(manifest, "unknown/unknown", digest)])
            entries = platform_entries(manifest)
            found = []
            for platform, child in entries[:MAX_PLATFORMS]:
                child_manifest, _, child_digest = self.manifest(name, child)
                found.append(image_size(child_manifest, platform, child_digest))
            return Platforms(found, max(0, len(entries) - MAX_PLATFORMS))
        except ManifestError as exc:
            raise MalformedResponse(f"{name}:{reference}: {exc}") from None


def _raise_for(endpoint: str, answer: _Answer) -> None:
    status = answer.status
    if status < 400:
        return
    if status == 429:
        wait = _retry_after(answer.headers.get("retry-after"))
        raise RateLimited(f"registry {endpoint}: HTTP 429", until=time.time() + wait, status=429)
    if status >= 500:
        raise ServerError(f"registry {endpoint}: HTTP {status}", status=status)
    if status in (401, 403):
        raise AuthError(f"registry {endpoint}: HTTP {status}", status=status)
    if status == 404:
        raise NotFound(f"registry {endpoint}: HTTP 404 ({_error_code(answer.body)})", status=404)
    raise ClientError(
        f"registry {endpoint}: HTTP {status} ({_error_code(answer.body)})", status=status
    )


def _retry_after(value: str | None) -> float:
    try:
        wait = float(value) if value is not None else 1.0
    except ValueError:
        return 1.0
    return min(3600.0, max(0.0, wait)) if not math.isnan(wait) else 1.0


def _basic(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def _error_code(body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors") or [{}]
        return str(errors[0].get("code", ""))[:40] or "no code"
    except (ValueError, AttributeError, IndexError, TypeError):
        return "no code"


def parse_reference(ref: str) -> tuple[str, str, str]:
    """`[http://]HOST[:PORT]/NAME:TAG` or `…@DIGEST` → (base URL, name, reference)."""
    scheme = "https"
    if ref.startswith(("http://", "https://")):
        scheme, ref = ref.split("://", 1)
    host, _, rest = ref.partition("/")
    if not host or not rest or "@" in host:
        raise ValueError(f"{ref!r} is not HOST/NAME:TAG")
    if "@" in rest:
        name, reference = rest.split("@", 1)
    else:
        name, _, reference = (
            rest.rpartition(":") if ":" in rest.rsplit("/", 1)[-1] else (rest, "", "latest")
        )
    if not name or not reference:
        raise ValueError(f"{ref!r} is not HOST/NAME:TAG")
    if scheme == "http" and not is_loopback(urlsplit(f"http://{host}").hostname or ""):
        raise ValueError("plain http is allowed for loopback registries only")
    return f"{scheme}://{host}", name, reference
