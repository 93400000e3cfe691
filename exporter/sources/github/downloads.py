"""Artifacts and logs behind GitHub's 302 redirects: the API answers with a signed URL on another
host, which is fetched without the GitHub token, streamed, and capped in size."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import httpx

from exporter.sources.errors import NotFound, ServerError, SourceError, TransportError
from exporter.sources.github.client import GitHubClient


class TooLarge(SourceError):
    reason = "too_large"


class Expired(SourceError):
    reason = "expired"


def follow_download(client: GitHubClient, api_path: str, max_bytes: int, kind: str) -> bytes:
    """GET `api_path` (expects a 302), then stream the Location without any Authorization header.
    404/410 → NotFound; an expired or refused link → Expired; past `max_bytes` → TooLarge."""
    buffer = io.BytesIO()

    def collect(chunk: bytes) -> None:
        buffer.write(chunk)
        if buffer.tell() > max_bytes:
            raise TooLarge(f"{kind} exceeds the {max_bytes} byte cap")

    stream_download(client, api_path, kind, collect, max_declared=max_bytes)
    return buffer.getvalue()


def stream_download(
    client: GitHubClient,
    api_path: str,
    kind: str,
    consume: Callable[[bytes], None],
    max_declared: int | None = None,
) -> int:
    """Hands each chunk of the redirect target to `consume`, which may raise to stop."""
    total = 0
    with open_stream(client, api_path, kind, max_declared) as chunks:
        for chunk in chunks:
            total += len(chunk)
            consume(chunk)
    return total


@contextmanager
def open_stream(
    client: GitHubClient, api_path: str, kind: str, max_declared: int | None = None
) -> Iterator[Iterator[bytes]]:
    """The body behind `api_path`'s redirect as an iterator of chunks (constant memory). Errors
    before the first byte (5xx, transport) are retried; 401/403 → Expired; 404/410 → NotFound;
    a declared Content-Length over `max_declared` → TooLarge."""
    response = client.request("GET", client.url(api_path))
    if response.status_code == 200:
        yield iter([response.content])
        return
    location = response.headers.get("location")
    if response.status_code not in (301, 302, 303, 307, 308) or not location:
        raise NotFound(f"{api_path}: no redirect (HTTP {response.status_code})")
    attempt = 0
    while True:
        try:
            # A plain request on the shared pool: no Authorization header is ever added here.
            with client.http.stream("GET", location, follow_redirects=True) as blob:
                _count(client, kind, str(blob.status_code))
                if blob.status_code in (401, 403):
                    raise Expired(
                        f"{kind} link refused (HTTP {blob.status_code}); links expire after a minute"
                    )
                if blob.status_code in (404, 410):
                    raise NotFound(f"{kind} is gone (HTTP {blob.status_code})")
                if blob.status_code >= 500:
                    raise ServerError(
                        f"{kind} storage: HTTP {blob.status_code}", status=blob.status_code
                    )
                declared = blob.headers.get("content-length", "")
                if max_declared is not None and declared.isdigit() and int(declared) > max_declared:
                    raise TooLarge(f"{kind} is {declared} bytes, over the {max_declared} cap")
                try:
                    yield blob.iter_bytes()
                except httpx.TransportError as exc:
                    raise TransportError(
                        f"{kind} download interrupted: {type(exc).__name__}"
                    ) from None
                return
        except (ServerError, httpx.TransportError) as exc:
            if isinstance(exc, httpx.TransportError):
                _count(client, kind, "error")
            if attempt >= client.max_retries:
                if isinstance(exc, ServerError):
                    raise
                raise TransportError(f"{kind} download: {type(exc).__name__}") from None
            client.backoff.sleep(client.backoff.delay(attempt))
            attempt += 1


def capped(chunks: Iterable[bytes], max_bytes: int, truncated: list[bool]) -> Iterator[bytes]:
    """Chunks up to `max_bytes`; sets truncated[0] when there was more."""
    total = 0
    for chunk in chunks:
        if total + len(chunk) > max_bytes:
            yield chunk[: max_bytes - total]
            truncated[0] = True
            return
        total += len(chunk)
        yield chunk


def _count(client: GitHubClient, kind: str, code: str) -> None:
    if client.telemetry is not None:
        client.telemetry.api_requests.labels("github", f"(redirect) {kind}", code).inc()
