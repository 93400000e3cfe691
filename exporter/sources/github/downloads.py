"""Artifacts and logs behind GitHub's 302 redirects: the API answers with a signed URL on another
host, which is fetched without the GitHub token, streamed, and capped in size."""

from __future__ import annotations

import io

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
    response = client.request("GET", client.url(api_path))
    if response.status_code not in (301, 302, 303, 307, 308) or "location" not in response.headers:
        if response.status_code == 200:
            return (
                response.content[: max_bytes + 1]
                if len(response.content) <= max_bytes
                else _too_large(max_bytes)
            )
        raise NotFound(f"{api_path}: no redirect (HTTP {response.status_code})")
    location = response.headers["location"]
    attempt = 0
    while True:
        try:
            # A plain request on the shared connection pool: no auth headers are ever added here.
            with client.http.stream("GET", location, follow_redirects=True) as blob:
                _count(client, kind, str(blob.status_code))
                if blob.status_code in (401, 403):
                    raise Expired(
                        f"{kind} link refused (HTTP {blob.status_code}); it expires after a minute"
                    )
                if blob.status_code in (404, 410):
                    raise NotFound(f"{kind} is gone (HTTP {blob.status_code})")
                if blob.status_code >= 500:
                    raise ServerError(
                        f"{kind} storage: HTTP {blob.status_code}", status=blob.status_code
                    )
                declared = blob.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise TooLarge(f"{kind} is {declared} bytes, over the {max_bytes} cap")
                buffer = io.BytesIO()
                for chunk in blob.iter_bytes():
                    buffer.write(chunk)
                    if buffer.tell() > max_bytes:
                        raise TooLarge(f"{kind} exceeds the {max_bytes} byte cap")
                return buffer.getvalue()
        except (ServerError, httpx.TransportError) as exc:
            if isinstance(exc, httpx.TransportError):
                _count(client, kind, "error")
            if attempt >= client.max_retries:
                if isinstance(exc, ServerError):
                    raise
                raise TransportError(f"{kind} download: {type(exc).__name__}") from None
            client.backoff.sleep(client.backoff.delay(attempt))
            attempt += 1


def _too_large(max_bytes: int) -> bytes:
    raise TooLarge(f"body exceeds the {max_bytes} byte cap")


def _count(client: GitHubClient, kind: str, code: str) -> None:
    if client.telemetry is not None:
        client.telemetry.api_requests.labels("github", f"(redirect) {kind}", code).inc()


__all__ = ["Expired", "TooLarge", "follow_download"]
