"""Errors a source raises; `reason` is the `reason` label of poll_errors_total."""

from __future__ import annotations


class SourceError(Exception):
    reason = "error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransportError(SourceError):
    reason = "transport"


class ServerError(SourceError):
    reason = "http_5xx"


class MalformedResponse(SourceError):
    reason = "malformed"


class RateLimited(SourceError):
    reason = "rate_limited"

    def __init__(self, message: str, *, until: float, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.until = until


class AuthError(SourceError):
    reason = "auth"


class NotFound(SourceError):
    reason = "not_found"


class ClientError(SourceError):
    reason = "http_4xx"


class TooLarge(SourceError):
    """A body over its size cap (API page, manifest, log, artifact)."""

    reason = "too_large"


class RedirectRefused(SourceError):
    """A redirect to a scheme or host the exporter does not fetch (file://, ftp://, plain http to
    a non-loopback host), or too many redirects."""

    reason = "redirect_refused"


class Expired(SourceError):
    """A signed download link that was refused (they live about a minute)."""

    reason = "expired"


class Stopping(SourceError):
    """The exporter is shutting down: the poll ends without further requests."""

    reason = "stopping"
