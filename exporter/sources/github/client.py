"""The GitHub REST client: versioned headers, Link pagination on the API's own origin, ETag
conditional requests kept in the state store, the rate-limit budget checked before every request,
retries with backoff, a deadline and a size cap on every response."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx

from exporter.logging import get_logger
from exporter.sources.errors import (
    AuthError,
    ClientError,
    Expired,
    MalformedResponse,
    NotFound,
    RateLimited,
    RedirectRefused,
    ServerError,
    SourceError,
    Stopping,
    TooLarge,
    TransportError,
)
from exporter.sources.github.auth import API_VERSION, Auth
from exporter.sources.github.ratelimit import RateBudget, rate_limit_wait
from exporter.sources.http import (
    MAX_REDIRECTS,
    RetryPolicy,
    deadline,
    read_capped,
    redirect_target,
    same_origin,
)
from exporter.telemetry import Telemetry

log = get_logger(__name__)
T = TypeVar("T")

# Pages of one listing: the runs window is split below GitHub's 1,000-result cap (10 pages of
# 100), so only a hostile or broken `next` chain reaches this.
MAX_PAGES = 200
MAX_BODY_BYTES = 32 * 1024 * 1024
# Longest wait slept inside a poll for a rate limit; longer ones pause polling instead.
MAX_INLINE_WAIT = 60.0

_TEMPLATES = [
    (re.compile(r"^/repos/[^/]+/[^/]+"), "/repos/{owner}/{repo}"),
    (re.compile(r"/contents/.*$"), "/contents/{path}"),
    (re.compile(r"/runs/\d+"), "/runs/{run_id}"),
    (re.compile(r"/attempts/\d+"), "/attempts/{attempt_number}"),
    (re.compile(r"/jobs/\d+"), "/jobs/{job_id}"),
    (re.compile(r"/artifacts/\d+"), "/artifacts/{artifact_id}"),
    (re.compile(r"/installations/\d+"), "/installations/{installation_id}"),
    (re.compile(r"^/orgs/[^/]+"), "/orgs/{org}"),
]


def endpoint_template(path: str) -> str:
    """`/repos/a/b/actions/runs/12/jobs` → `/repos/{owner}/{repo}/actions/runs/{run_id}/jobs`."""
    for pattern, replacement in _TEMPLATES:
        path = pattern.sub(replacement, path)
    return path


class HttpCache(Protocol):
    def get(self, key: str) -> tuple[str, bytes] | None: ...

    def put(self, key: str, etag: str, body: bytes) -> None: ...

    def touch(self, key: str) -> None: ...


@dataclass
class Page:
    data: Any
    next_url: str | None
    cached: bool
    status: int


@dataclass
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes
    links: dict[str, dict[str, str]]


class _RetryableAuth(AuthError):
    """A 401 answered once with a fresh installation token."""


class GitHubClient:
    def __init__(
        self,
        api_url: str,
        auth: Auth,
        *,
        http: httpx.Client,
        timeout: float = 30.0,
        telemetry: Telemetry | None = None,
        cache: HttpCache | None = None,
        budget: RateBudget | None = None,
        retry: RetryPolicy | None = None,
        secondary_wait: float = 60.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._api_path = urlsplit(self.api_url).path.rstrip("/")
        self.auth = auth
        self.http = http
        self.timeout = timeout
        self.telemetry = telemetry
        self.cache = cache
        self.budget = budget or RateBudget()
        self.retry = retry or RetryPolicy()
        self.secondary_wait = secondary_wait
        self.stop = stop or threading.Event()
        self._rng = random.Random()

    # -- labels and accounting -----------------------------------------------------------------------
    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.api_url}{path}{query}"

    def endpoint(self, url: str) -> str:
        path = urlsplit(url).path
        if self._api_path and path.startswith(self._api_path):
            path = path[len(self._api_path) :]
        return endpoint_template(path)

    def count(self, endpoint: str, code: str) -> None:
        if self.telemetry is not None:
            self.telemetry.api_requests.labels("github", endpoint, code).inc()

    def skip(self, source: str, reason: str) -> None:
        if self.telemetry is not None:
            self.telemetry.poll_errors.labels(source, reason).inc()

    def _record_rate(self, headers: httpx.Headers) -> None:
        state = self.budget.update(headers)
        if state is not None and self.telemetry is not None:
            if state.remaining is not None:
                self.telemetry.rate_remaining.labels(state.resource).set(state.remaining)
            if state.limit is not None:
                self.telemetry.rate_limit.labels(state.resource).set(state.limit)

    # -- one request --------------------------------------------------------------------------------------
    def _check_allowed(self, url: str) -> None:
        if self.stop.is_set():
            raise Stopping("the exporter is stopping")
        paused = self.budget.paused_until()
        if paused is not None:
            raise RateLimited(
                f"{self.endpoint(url)}: paused for the rate limit until {paused:.0f}", until=paused
            )

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            **self.auth.headers(),
            **(extra or {}),
        }

    def _send(
        self, url: str, headers: dict[str, str] | None, tries: list[int], refresh: bool
    ) -> _Answer:
        """One try: the budget, the request under its deadline, the typed error of the answer."""
        self._check_allowed(url)
        endpoint = self.endpoint(url)
        tries[0] += 1
        try:
            with (
                deadline(self.timeout),
                self.http.stream("GET", url, headers=self._headers(headers)) as response,
            ):
                self.count(endpoint, str(response.status_code))
                self._record_rate(response.headers)
                bodyless = response.status_code in (301, 302, 303, 304, 307, 308)
                body = b"" if bodyless else read_capped(response, MAX_BODY_BYTES, endpoint)
                links = {str(k): v for k, v in response.links.items() if k}
                answer = _Answer(response.status_code, response.headers, body, links)
        except httpx.TransportError as exc:
            self.count(endpoint, "error")
            raise TransportError(f"{endpoint}: {type(exc).__name__}") from None
        if answer.status == 401 and refresh:
            # An installation token may have been revoked early: mint a new one, once.
            raise _RetryableAuth(f"{endpoint}: HTTP 401", status=401)
        self._raise_for(endpoint, answer, tries[0] - 1)
        return answer

    def _raise_for(self, endpoint: str, answer: _Answer, attempt: int) -> None:
        status = answer.status
        if status < 400:
            return
        response = httpx.Response(status, headers=answer.headers, content=answer.body)
        wait = rate_limit_wait(response, self.secondary_wait, attempt, self._rng.random())
        if wait is not None:
            until = time.time() + wait
            if wait > MAX_INLINE_WAIT or attempt >= self.retry.max_retries:
                self.budget.block_until(until)
            raise RateLimited(
                f"{endpoint}: rate limited for {wait:.0f}s", until=until, status=status
            )
        if status >= 500:
            raise ServerError(f"{endpoint}: HTTP {status}", status=status)
        if status in (401, 403):
            raise AuthError(f"{endpoint}: HTTP {status}", status=status)
        if status in (404, 410):
            raise NotFound(f"{endpoint}: HTTP {status}", status=status)
        raise ClientError(f"{endpoint}: HTTP {status}", status=status)

    def _decide(self, exc: Exception) -> bool | float:
        """stamina's backoff hook: which failures are retried, and rate limits after their wait."""
        if isinstance(exc, RateLimited):
            wait = exc.until - time.time()
            paused = self.budget.paused_until() is not None
            return max(0.0, wait) if wait <= MAX_INLINE_WAIT and not paused else False
        return isinstance(exc, ServerError | TransportError | MalformedResponse)

    def _retrying(self, action: Callable[[bool], T]) -> T:
        """`action(refresh)` with retries; after a 401, once more with a fresh token."""
        try:
            return self.retry.call(self._decide, lambda: action(True))
        except _RetryableAuth:
            self.auth.invalidate()
            return self.retry.call(self._decide, lambda: action(False))

    def request(self, url: str, headers: dict[str, str] | None = None) -> _Answer:
        """One logical GET with retries; returns 2xx/3xx answers, raises SourceError."""
        tries = [0]
        return self._retrying(lambda refresh: self._send(url, headers, tries, refresh))

    # -- JSON pages ------------------------------------------------------------------------------------------
    def _decode(self, url: str, content: bytes) -> Any:
        try:
            return json.loads(content)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise MalformedResponse(f"{self.endpoint(url)}: body is not JSON") from None

    def get_page(self, url: str, *, conditional: bool = False) -> Page:
        """GET one JSON page. With `conditional`, sends the stored ETag; a 304 returns the stored
        body (free of rate-limit cost). A body that is not JSON is retried like a 5xx."""
        cache_key = f"{self.auth.identity} {url}"
        cached = self.cache.get(cache_key) if (conditional and self.cache) else None
        headers = {"If-None-Match": cached[0]} if cached else {}
        tries = [0]

        def fetch(refresh: bool) -> Page:
            answer = self._send(url, headers, tries, refresh)
            if answer.status == 304 and cached is not None and self.cache is not None:
                self.cache.touch(cache_key)
                envelope = json.loads(cached[1])
                return Page(envelope["data"], envelope.get("next"), True, 304)
            data = self._decode(url, answer.body)
            next_url = answer.links.get("next", {}).get("url")
            etag = answer.headers.get("etag")
            if conditional and self.cache is not None and etag:
                envelope_bytes = json.dumps({"data": data, "next": next_url}).encode()
                self.cache.put(cache_key, etag, envelope_bytes)
            return Page(data, next_url, False, answer.status)

        return self._retrying(fetch)

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.get_page(self.url(path, params)).data

    def paginate(
        self,
        path: str,
        params: dict[str, Any],
        item_key: str,
        *,
        conditional: bool = False,
        source: str = "",
    ) -> Iterator[tuple[Page, list[Any]]]:
        """Pages following `Link: rel="next"` on the API's own origin only (the token never goes
        elsewhere), at most MAX_PAGES; each page's item list as sent."""
        url: str | None = self.url(path, params)
        seen: set[str] = set()
        pages = 0
        while url is not None and url not in seen:
            if pages >= MAX_PAGES:
                self.skip(source, "pages_capped")
                log.warning(
                    "listing cut at the page cap",
                    source=source,
                    endpoint=self.endpoint(url),
                    pages=pages,
                )
                return
            seen.add(url)
            page = self.get_page(url, conditional=conditional)
            pages += 1
            if not isinstance(page.data, dict) or not isinstance(page.data.get(item_key), list):
                raise MalformedResponse(f"{self.endpoint(url)}: no {item_key} list")
            yield page, page.data[item_key]
            url = page.next_url
            if url is not None and not same_origin(url, self.api_url):
                raise MalformedResponse(
                    f"{self.endpoint(self.api_url + path)}: next page on another origin"
                )

    # -- downloads behind redirects ----------------------------------------------------------------------------
    @contextmanager
    def download(self, api_path: str, kind: str, max_bytes: int) -> Iterator[Iterator[bytes]]:
        """The body behind `api_path`'s redirect as chunks, fetched without the token, the whole
        download under one deadline; at most MAX_REDIRECTS redirects, only to https (or loopback
        http). 404/410 → NotFound; a refused link → Expired; a declared size over `max_bytes` →
        TooLarge. Errors before the first byte are retried."""
        answer = self.request(self.url(api_path))
        if answer.status == 200:
            yield iter([answer.body])
            return
        location = answer.headers.get("location")
        if answer.status not in (301, 302, 303, 307, 308) or not location:
            raise NotFound(f"{api_path}: no redirect (HTTP {answer.status})")
        target = redirect_target(self.url(api_path), location)
        with ExitStack() as stack:
            response = self.retry.call(
                self._decide, lambda: self._open_blob(stack, target, kind, max_bytes)
            )
            yield _guarded(response, kind)

    def _open_blob(self, outer: ExitStack, url: str, kind: str, max_bytes: int) -> httpx.Response:
        """A plain GET on the shared pool (no Authorization header is ever added here)."""
        endpoint = f"(redirect) {kind}"
        for _ in range(MAX_REDIRECTS + 1):
            self._check_allowed(url)
            with ExitStack() as stack:
                stack.enter_context(deadline(max(60.0, self.timeout * 4)))
                try:
                    response = stack.enter_context(self.http.stream("GET", url))
                except httpx.TransportError as exc:
                    self.count(endpoint, "error")
                    raise TransportError(f"{kind} download: {type(exc).__name__}") from None
                self.count(endpoint, str(response.status_code))
                location = response.headers.get("location")
                if response.status_code in (301, 302, 303, 307, 308) and location:
                    url = redirect_target(url, location)
                    continue
                _blob_status(kind, response, max_bytes)
                outer.enter_context(stack.pop_all())
                return response
        raise RedirectRefused(f"{kind}: more than {MAX_REDIRECTS} redirects")


def _blob_status(kind: str, response: httpx.Response, max_bytes: int) -> None:
    status = response.status_code
    if status in (401, 403):
        raise Expired(f"{kind} link refused (HTTP {status}); links expire after a minute")
    if status in (404, 410):
        raise NotFound(f"{kind} is gone (HTTP {status})")
    if status >= 500:
        raise ServerError(f"{kind} storage: HTTP {status}", status=status)
    if status >= 300:
        raise NotFound(f"{kind}: unexpected HTTP {status}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"{kind} is {declared} bytes, over the {max_bytes} cap")


def _guarded(response: httpx.Response, kind: str) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes(64 * 1024)
    except httpx.TransportError as exc:
        raise TransportError(f"{kind} download interrupted: {type(exc).__name__}") from None


__all__ = ["GitHubClient", "Page", "SourceError", "endpoint_template"]
