"""The GitHub REST client: versioned headers, Link pagination, ETag conditional requests kept in the
state store, rate-limit accounting, retries with backoff, timeouts on everything."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import httpx

from exporter.logging import get_logger
from exporter.sources.errors import (
    AuthError,
    ClientError,
    MalformedResponse,
    NotFound,
    RateLimited,
    ServerError,
    SourceError,
    TransportError,
)
from exporter.sources.github.auth import Auth
from exporter.sources.retry import Backoff
from exporter.telemetry import Telemetry

log = get_logger(__name__)

API_VERSION = "2022-11-28"

_TEMPLATES = [
    (re.compile(r"^/repos/[^/]+/[^/]+"), "/repos/{owner}/{repo}"),
    (re.compile(r"/contents/.*$"), "/contents/{path}"),
    (re.compile(r"/runs/\d+"), "/runs/{run_id}"),
    (re.compile(r"/attempts/\d+"), "/attempts/{attempt_number}"),
    (re.compile(r"/jobs/\d+"), "/jobs/{job_id}"),
    (re.compile(r"/artifacts/\d+"), "/artifacts/{artifact_id}"),
    (re.compile(r"/installations/\d+"), "/installations/{installation_id}"),
]


def endpoint_template(path: str) -> str:
    """`/repos/a/b/actions/runs/12/jobs` → `/repos/{owner}/{repo}/actions/runs/{run_id}/jobs`."""
    for pattern, replacement in _TEMPLATES:
        path = pattern.sub(replacement, path)
    return path


class HttpCache(Protocol):
    def get_http_cache(self, key: str) -> tuple[str, bytes] | None: ...

    def put_http_cache(self, key: str, etag: str, body: bytes) -> None: ...


@dataclass
class Page:
    data: Any
    next_url: str | None
    cached: bool
    status: int


@dataclass
class RateLimitState:
    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    resource: str = "core"


class RateBudget:
    """Latest rate-limit headers, and the decision whether a poll may spend requests now."""

    def __init__(self, reserve: float = 0.05) -> None:
        self.reserve = reserve
        self._lock = threading.Lock()
        self.state: dict[str, RateLimitState] = {}
        self.blocked_until = 0.0

    def update(self, headers: httpx.Headers) -> RateLimitState | None:
        if "x-ratelimit-remaining" not in headers:
            return None
        try:
            resource = headers.get("x-ratelimit-resource", "core")
            state = RateLimitState(
                limit=int(headers.get("x-ratelimit-limit", "0")) or None,
                remaining=int(headers["x-ratelimit-remaining"]),
                reset=float(headers.get("x-ratelimit-reset", "0")) or None,
                resource=resource,
            )
        except ValueError:
            return None
        with self._lock:
            self.state[resource] = state
        return state

    def block_until(self, until: float) -> None:
        with self._lock:
            self.blocked_until = max(self.blocked_until, until)

    def slowdown(self, now: float | None = None) -> float:
        """Multiplier for the poll interval: 1 while at least half the budget is left, rising as
        `remaining` falls; infinity (skip) below the reserve until the reset or a retry-after."""
        now = time.time() if now is None else now
        with self._lock:
            if now < self.blocked_until:
                return float("inf")
            core = self.state.get("core")
        if core is None or not core.limit or core.remaining is None:
            return 1.0
        if core.reset is not None and now >= core.reset:
            return 1.0
        fraction = core.remaining / core.limit
        if fraction <= self.reserve:
            return float("inf")
        if fraction >= 0.5:
            return 1.0
        return min(8.0, 0.5 / fraction)


class GitHubClient:
    def __init__(
        self,
        api_url: str,
        auth: Auth,
        *,
        http: httpx.Client,
        telemetry: Telemetry | None = None,
        cache: HttpCache | None = None,
        budget: RateBudget | None = None,
        max_retries: int = 3,
        backoff: Backoff | None = None,
        secondary_wait: float = 60.0,
    ) -> None:
        self.secondary_wait = secondary_wait
        self.api_url = api_url.rstrip("/")
        self._api_path = urlsplit(self.api_url).path.rstrip("/")
        self.auth = auth
        self.http = http
        self.telemetry = telemetry
        self.cache = cache
        self.budget = budget or RateBudget()
        self.max_retries = max_retries
        self.backoff = backoff or Backoff()

    # -- requests --------------------------------------------------------------------------------
    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.api_url}{path}{query}"

    def _endpoint(self, url: str) -> str:
        path = urlsplit(url).path
        if self._api_path and path.startswith(self._api_path):
            path = path[len(self._api_path) :]
        return endpoint_template(path)

    def _count(self, url: str, code: str) -> None:
        if self.telemetry is not None:
            self.telemetry.api_requests.labels("github", self._endpoint(url), code).inc()

    def _record_rate(self, response: httpx.Response) -> None:
        state = self.budget.update(response.headers)
        if state is not None and self.telemetry is not None:
            if state.remaining is not None:
                self.telemetry.rate_remaining.labels(state.resource).set(state.remaining)
            if state.limit is not None:
                self.telemetry.rate_limit.labels(state.resource).set(state.limit)

    def _rate_limit_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait when the response is a primary or secondary rate limit, else None."""
        if response.status_code not in (403, 429):
            return None
        retry_after = response.headers.get("retry-after")
        remaining = response.headers.get("x-ratelimit-remaining")
        text = response.text[:500].lower() if response.content else ""
        limited = retry_after is not None or remaining == "0" or "rate limit" in text
        if response.status_code == 429:
            limited = True
        if not limited:
            return None
        if retry_after is not None:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                pass
        if remaining == "0":
            try:
                return max(0.0, float(response.headers.get("x-ratelimit-reset", "0")) - time.time())
            except ValueError:
                pass
        # Secondary limit without guidance: GitHub advises at least a minute, then growing.
        return float(self.secondary_wait * (2**attempt) * (1 + self.backoff.rng.random() * 0.25))

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """One logical request with retries; returns 2xx/3xx responses, raises SourceError."""
        attempt = 0
        auth_retried = False
        while True:
            request_headers = {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                **self.auth.headers(),
                **(headers or {}),
            }
            try:
                response = self.http.request(
                    method, url, headers=request_headers, follow_redirects=follow_redirects
                )
            except httpx.TransportError as exc:
                self._count(url, "error")
                if attempt < self.max_retries:
                    self.backoff.sleep(self.backoff.delay(attempt))
                    attempt += 1
                    continue
                raise TransportError(f"{self._endpoint(url)}: {type(exc).__name__}") from None
            self._count(url, str(response.status_code))
            self._record_rate(response)
            status = response.status_code
            if status < 400:
                return response
            wait = self._rate_limit_wait(response, attempt)
            if wait is not None:
                if attempt < self.max_retries and wait <= self.backoff.max_inline_wait:
                    log.warning(
                        "github rate limited, waiting",
                        endpoint=self._endpoint(url),
                        seconds=round(wait, 1),
                    )
                    self.backoff.sleep(wait)
                    attempt += 1
                    continue
                until = time.time() + wait
                self.budget.block_until(until)
                raise RateLimited(
                    f"{self._endpoint(url)}: rate limited for {wait:.0f}s",
                    until=until,
                    status=status,
                )
            if status >= 500:
                if attempt < self.max_retries:
                    self.backoff.sleep(self.backoff.delay(attempt))
                    attempt += 1
                    continue
                raise ServerError(f"{self._endpoint(url)}: HTTP {status}", status=status)
            if status == 401 and not auth_retried:
                # An installation token may have been revoked early: mint a new one once.
                self.auth.invalidate()
                auth_retried = True
                continue
            if status in (401, 403):
                raise AuthError(f"{self._endpoint(url)}: HTTP {status}", status=status)
            if status in (404, 410):
                raise NotFound(f"{self._endpoint(url)}: HTTP {status}", status=status)
            raise ClientError(f"{self._endpoint(url)}: HTTP {status}", status=status)

    def _decode(self, url: str, content: bytes) -> Any:
        try:
            return json.loads(content)
        except (ValueError, UnicodeDecodeError):
            raise MalformedResponse(f"{self._endpoint(url)}: body is not JSON") from None

    def get_page(self, url: str, *, conditional: bool = False) -> Page:
        """GET one JSON page. With `conditional`, sends the stored ETag; a 304 returns the stored
        body (free of rate-limit cost). Malformed bodies are retried like 5xx."""
        cache_key = f"{self.auth.identity} {url}"
        cached = self.cache.get_http_cache(cache_key) if (conditional and self.cache) else None
        attempt = 0
        while True:
            headers = {"If-None-Match": cached[0]} if cached else {}
            response = self.request("GET", url, headers=headers)
            if response.status_code == 304 and cached is not None:
                envelope = json.loads(cached[1])
                return Page(envelope["data"], envelope.get("next"), True, 304)
            try:
                data = self._decode(url, response.content)
            except MalformedResponse:
                if attempt < self.max_retries:
                    self.backoff.sleep(self.backoff.delay(attempt))
                    attempt += 1
                    continue
                raise
            next_url = response.links.get("next", {}).get("url")
            etag = response.headers.get("etag")
            if conditional and self.cache is not None and etag:
                self.cache.put_http_cache(
                    cache_key, etag, json.dumps({"data": data, "next": next_url}).encode()
                )
            return Page(data, next_url, False, response.status_code)

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.get_page(self.url(path, params)).data

    def paginate(
        self, path: str, params: dict[str, Any], item_key: str, *, conditional: bool = False
    ) -> Iterator[tuple[Page, list[dict[str, Any]]]]:
        """Pages following `Link: rel="next"`; each with its items (validated to be a list)."""
        url: str | None = self.url(path, params)
        seen: set[str] = set()
        while url is not None and url not in seen:
            seen.add(url)
            page = self.get_page(url, conditional=conditional)
            if not isinstance(page.data, dict) or not isinstance(page.data.get(item_key), list):
                raise MalformedResponse(f"{self._endpoint(url)}: no {item_key} list")
            items = [item for item in page.data[item_key] if isinstance(item, dict)]
            yield page, items
            url = page.next_url


def ensure(condition: bool, message: str) -> None:
    if not condition:
        raise MalformedResponse(message)


__all__ = ["GitHubClient", "Page", "RateBudget", "SourceError", "endpoint_template", "ensure"]
