"""HTTP plumbing shared by every source (GitHub, its storage redirects, OCI registries): one httpx
client per upstream whose `timeout` bounds a whole request (connect, headers and body, however
slowly an upstream trickles), the environment's proxies (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY,
NO_PROXY), bodies read with a size cap, redirects followed by hand only to https (or loopback
http), and retries with backoff through stamina.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
import stamina
from stamina.instrumentation import RetryDetails, set_on_retry_hooks

from exporter.config import ConfigError, is_loopback
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
    only bounds each socket operation, which a slow trickle never exceeds); through an HTTP(S)
    proxy when one is given (plain http tunnels nothing, https goes through CONNECT)."""

    def __init__(self, limits: httpx.Limits, proxy: httpx.Proxy | None = None) -> None:
        super().__init__(limits=limits)
        ssl_context = httpx.create_ssl_context()
        if proxy is None:
            self._pool = httpcore.ConnectionPool(
                ssl_context=ssl_context,
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                network_backend=_DeadlineBackend(),
            )
            return
        self._pool = httpcore.HTTPProxy(
            proxy_url=httpcore.URL(
                scheme=proxy.url.raw_scheme,
                host=proxy.url.raw_host,
                port=proxy.url.port,
                target=proxy.url.raw_path,
            ),
            proxy_auth=proxy.raw_auth,
            proxy_headers=proxy.headers.raw,
            ssl_context=ssl_context,
            proxy_ssl_context=proxy.ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_DeadlineBackend(),
        )


class _ProxyRouter(httpx.BaseTransport):
    """The environment's proxy settings, read as urllib reads them (httpx ignores them once a
    transport of our own is given): a request goes through the proxy for its scheme (or
    ALL_PROXY) unless NO_PROXY names its host."""

    def __init__(self, limits: httpx.Limits, proxies: Mapping[str, str]) -> None:
        self._bypass = [e.strip().lower() for e in proxies.get("no", "").split(",") if e.strip()]
        self._direct = _DeadlineTransport(limits)
        self._via = {
            scheme: _DeadlineTransport(limits, _proxy(scheme, url))
            for scheme, url in proxies.items()
            if scheme in ("http", "https", "all")
        }

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._transport_for(request.url).handle_request(request)

    def _transport_for(self, url: httpx.URL) -> httpx.BaseTransport:
        via = self._via.get(url.scheme) or self._via.get("all")
        if via is None or any(_bypassed(url, entry) for entry in self._bypass):
            return self._direct
        return via

    def close(self) -> None:
        for transport in (self._direct, *self._via.values()):
            transport.close()


def _bypassed(url: httpx.URL, entry: str) -> bool:
    """NO_PROXY as curl reads it: `*`; a host and its subdomains (`example.com`, `.example.com`),
    optionally with a port; an IP address or network (`10.0.0.0/8`)."""
    if entry == "*":
        return True
    host = url.host.lower()
    name, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
    if port and (not port.isdigit() or int(port) != (url.port or _port(url.scheme))):
        return False
    name = name.strip("[]").lstrip(".")
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False)
    except ValueError:
        return host == name or host.endswith("." + name)


def _proxy(scheme: str, url: str) -> httpx.Proxy:
    """A proxy from `<SCHEME>_PROXY`; ConfigError for one httpx can't use here (the message never
    repeats the URL: it may carry a password)."""
    name = f"{scheme.upper()}_PROXY"
    try:
        proxy = httpx.Proxy(url if "://" in url else f"http://{url}")
    except (ValueError, httpx.InvalidURL):
        raise ConfigError(f"{name}: not a proxy URL") from None
    if proxy.url.scheme not in ("http", "https"):
        raise ConfigError(f"{name}: only http:// and https:// proxies are supported")
    return proxy


def make_client(timeout: float, max_connections: int = 16) -> httpx.Client:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=8)
    proxies = urllib.request.getproxies_environment()
    transport: httpx.BaseTransport = (
        _ProxyRouter(limits, proxies)
        if any(scheme in proxies for scheme in ("http", "https", "all"))
        else _DeadlineTransport(limits)
    )
    return httpx.Client(
        transport=transport,
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
