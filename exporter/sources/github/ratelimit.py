"""GitHub's rate limits: the latest `x-ratelimit-*` headers, how long an answer asks to wait, and
the budget every request checks before it is sent."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import httpx

from exporter.logging import get_logger

log = get_logger(__name__)

# GitHub's primary limit resets every hour: no answer is believed to ask for a longer wait.
MAX_WAIT = 3600.0


@dataclass
class RateLimitState:
    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    resource: str = "core"


def rate_limit_wait(
    response: httpx.Response, secondary_wait: float, attempt: int, jitter: float
) -> float | None:
    """Seconds a 403/429 asks to wait (None: not a rate limit), capped at MAX_WAIT. `jitter` in
    [0, 1) spreads the growing wait after a secondary limit that gives no guidance."""
    if response.status_code not in (403, 429):
        return None
    headers = response.headers
    retry_after = headers.get("retry-after")
    remaining = headers.get("x-ratelimit-remaining")
    text = response.text[:500].lower() if response.content else ""
    limited = (
        response.status_code == 429
        or retry_after is not None
        or remaining == "0"
        or "rate limit" in text
    )
    if not limited:
        return None
    wait = _seconds(retry_after)
    if wait is None and remaining == "0":
        reset = _seconds(headers.get("x-ratelimit-reset"))
        wait = None if reset is None else reset - time.time()
    if wait is None:
        # A secondary limit without guidance: GitHub advises at least a minute, then growing.
        wait = secondary_wait * (2**attempt) * (1 + jitter * 0.25)
    return min(MAX_WAIT, max(0.0, wait))


def _seconds(value: str | None) -> float | None:
    """A finite number of seconds, or None (absent, not a number, nan, infinite)."""
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    if number is None or not math.isfinite(number):
        return None
    return number


def _reset(value: str | None) -> float | None:
    """`x-ratelimit-reset` as a moment within [now, now + MAX_WAIT]; None when it is absent, 0
    or not a finite number (a `nan` reset would otherwise pause requests forever)."""
    reset = _seconds(value)
    if not reset:
        return None
    now = time.time()
    return min(max(reset, now), now + MAX_WAIT)


class RateBudget:
    """Shared by every GitHub source of one token: the latest headers, and whether requests may be
    sent now (paused below `reserve` of the limit until the reset, or after a long rate limit)."""

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
                reset=_reset(headers.get("x-ratelimit-reset")),
                resource=resource,
            )
        except ValueError:
            return None
        with self._lock:
            self.state[resource] = state
        return state

    def block_until(self, until: float) -> None:
        """Pause every request until `until` (at most MAX_WAIT from now); logged once per pause."""
        until = min(until, time.time() + MAX_WAIT)
        with self._lock:
            starts = until > self.blocked_until + 1
            self.blocked_until = max(self.blocked_until, until)
        if starts:
            log.warning(
                "github requests paused for the rate limit", seconds=round(until - time.time())
            )

    def paused_until(self, now: float | None = None) -> float | None:
        """When requests may be sent again, or None when they may be sent now."""
        now = time.time() if now is None else now
        with self._lock:
            if now < self.blocked_until:
                return self.blocked_until
            core = self.state.get("core")
        if core is None or not core.limit or core.remaining is None or core.reset is None:
            return None
        if now >= core.reset or core.remaining / core.limit > self.reserve:
            return None
        return core.reset

    def slowdown(self, now: float | None = None) -> float:
        """Multiplier for the poll interval: 1 while at least half the budget is left, rising as
        `remaining` falls; infinity while paused."""
        now = time.time() if now is None else now
        if self.paused_until(now) is not None:
            return float("inf")
        with self._lock:
            core = self.state.get("core")
        if core is None or not core.limit or core.remaining is None:
            return 1.0
        if core.reset is not None and now >= core.reset:
            return 1.0
        fraction = core.remaining / core.limit
        return 1.0 if fraction >= 0.5 else min(8.0, 0.5 / max(fraction, 1e-9))
