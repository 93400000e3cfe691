"""Durations (`90`, `90s`, `15m`, `2h`, `7d`) and GitHub timestamps."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


# Durations above a year are mistakes (and overflow timers downstream); NaN and infinities too.
MAX_DURATION = 365 * 86400.0


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_duration(value: object) -> float:
    """Seconds from `90`, `90s`, `15m`, `2h`, `7d` (a bare number is seconds): finite, 0 to 365d."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = float("inf")
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"invalid duration {_shown(value)}: use e.g. 90, 90s, 15m, 2h, 7d")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    else:
        raise ValueError(f"invalid duration {_shown(value)}")
    if math.isnan(seconds):
        raise ValueError(f"invalid duration {_shown(value)}: not a number")
    if seconds < 0:
        raise ValueError(f"invalid duration {_shown(value)}: negative")
    if seconds > MAX_DURATION:
        raise ValueError(f"invalid duration {_shown(value)}: more than 365 days")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form: 600 → `10m`, 90 → `90s`."""
    for unit in ("w", "d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds}s"


def parse_timestamp(value: object) -> float | None:
    """Epoch seconds from an ISO 8601 timestamp with any offset; None when absent or invalid."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def format_timestamp(epoch: float) -> str:
    """GitHub's `2020-01-22T19:33:08Z` form."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
