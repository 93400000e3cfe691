"""HTTP plumbing shared by every source (GitHub, its storage redirects, OCI registries): one httpx
client per upstream whose `timeout` bounds a whole request (connect, headers and body, however
slowly an upstream trickles), bodies read with a size cap, redirects followed by hand only to
https (or loopback http), and retries with backoff through stamina.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
import stamina
from stamina.instrumentation import RetryDetails, set_on_retry_hooks

from exporter.config import is_loopback
from exporter.logging import get_logger
from exporter.sources.errors import MalformedResponse, RedirectRefused, TooLarge

log = get_logger(__name__)
T = TypeVar("T")
USER_AGENT = "ci-pipeline-exporter"
CHUNK = 64 * 1024
MAX_REDIRECTS = 5


# -- a deadline for the whole request -------------------------------------------------------------
_deadline = threading.local()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every socket operation of this thread inside the block shares one deadline."""
    previous = getattr(_deadline, "at", None)
    at = time.monotonic() + seconds
    _deadline.at = at if previous is None else min(previous, at)
    try:
        yield
    finally:
        _deadline.at = previous


def _remaining(timeout: float | None) -> float | None:
    at: float | None = getattr(_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _remaining(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _remaining(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _remaining(timeout))
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.SyncBackend):
    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = super().connect_tcp(host, port, _remaining(timeout), local_address, socket_options)
        return _DeadlineStream(stream)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport with a network backend that honours the thread's deadline (httpx itself
    only bounds each socket operation, which a slow trickle never exceeds)."""

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_DeadlineBackend(),
        )


def make_client(timeout: float, max_connections: int = 16) -> httpx.Client:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=8)
    return httpx.Client(
        transport=_DeadlineTransport(limits),
        timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
    )


# -- bodies ------------------------------------------------------------------------------------------
def read_capped(response: httpx.Response, limit: int, what: str) -> bytes:
    """The body of a streamed response, refusing more than `limit` bytes (declared or read)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"{what} is {declared} bytes, over the {limit} byte cap")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes(CHUNK):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"{what} exceeds the {limit} byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


# -- redirects ---------------------------------------------------------------------------------------
def redirect_target(base: str, location: str) -> str:
    """An absolute redirect target that may be fetched: https, or http to a loopback host."""
    try:
        target = urljoin(base, location)
        parts = urlsplit(target)
        _ = parts.port  # out of range or not a number: ValueError
        httpx.URL(target)
    except (ValueError, httpx.InvalidURL):
        # The message never repeats the URL: a signed link carries its credentials.
        raise MalformedResponse("redirect to a URL that can't be parsed") from None
    if parts.scheme == "https" and parts.hostname:
        return target
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return target
    raise RedirectRefused(f"redirect to a {parts.scheme or 'relative'}:// URL refused")


def same_origin(a: str, b: str) -> bool:
    """Same scheme, host and port; a URL that can't be parsed (a port out of range) is not."""
    try:
        pa, pb = urlsplit(a), urlsplit(b)
        return (pa.scheme, pa.hostname, pa.port or _port(pa.scheme)) == (
            pb.scheme,
            pb.hostname,
            pb.port or _port(pb.scheme),
        )
    except ValueError:
        return False


def _port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


# -- retries -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter (stamina). `decide(exc)` returns False
    (give up), True (retry after the backoff) or seconds (retry after exactly that long)."""

    max_retries: int = 3
    backoff: float = 0.5
    max_wait: float = 30.0

    def call(self, decide: Callable[[Exception], bool | float], action: Callable[[], T]) -> T:
        for attempt in stamina.retry_context(
            on=decide,
            attempts=self.max_retries + 1,
            timeout=None,
            wait_initial=self.backoff,
            wait_max=self.max_wait,
            wait_jitter=self.backoff,
        ):
            with attempt:
                return action()
        raise AssertionError("unreachable: stamina re-raises the last error")


def _log_retry(details: RetryDetails) -> None:
    log.info(
        "request retried",
        retry=details.retry_num,
        wait=round(details.wait_for, 2),
        error=str(details.caused_by),
    )


# Retries are logged in the exporter's own words (stamina's default hooks would also register a
# counter in prometheus-client's global registry, which the exporter does not serve).
set_on_retry_hooks([_log_retry])
