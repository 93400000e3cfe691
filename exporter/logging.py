"""structlog setup: JSON (default) or console lines on stderr, stdlib loggers bridged in, secrets scrubbed."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_KEYS = re.compile(r"(token|authorization|password|secret|private_key|jwt)", re.I)
# GitHub token formats, JWTs, and credentials in headers or URLs.
_SECRET_PATTERNS = [
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(
        r"(?i)([?&](?:sig|signature|token|access_token|urlSignature|X-Amz-Signature)=)[^&\s\"']+"
    ),
]
REDACTED = "<redacted>"


class SecretRegistry:
    """Values known to be secret (tokens read from the environment); scrubbed from every log line.
    Configured secrets are kept for the process's life; rotating ones (installation tokens, JWTs,
    registry tokens, minted again and again) until `grace` after they expire (the caller says
    when; `default_life` after they were added otherwise), so every token a cache may still use is
    scrubbed however many there are, and the set does not grow for ever. Beyond `max_rotating`
    (a bound on memory, never reached by the caches), the soonest to expire go first."""

    def __init__(
        self,
        max_rotating: int = 10_000,
        default_life: float = 3600.0,
        grace: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._values: set[str] = set()
        self._rotating: dict[str, float] = {}  # value -> when it expires (epoch seconds)
        self._max = max_rotating
        self._default_life = default_life
        self._grace = grace
        self._clock = clock
        self._lock = threading.Lock()

    def add(
        self, value: str | None, *, rotating: bool = False, expires_at: float | None = None
    ) -> None:
        if not value or len(value) < 4:
            return
        with self._lock:
            if not rotating:
                self._values.add(value)
                return
            now = self._clock()
            expires = now + self._default_life if expires_at is None else expires_at
            self._rotating[value] = max(expires, self._rotating.get(value, expires))
            self._evict(now)

    def _evict(self, now: float) -> None:
        """Under the lock: the expired ones, then the soonest to expire beyond the bound."""
        for value in [v for v, t in self._rotating.items() if t + self._grace < now]:
            del self._rotating[value]
        excess = len(self._rotating) - self._max
        if excess > 0:
            for value in sorted(self._rotating, key=self._rotating.__getitem__)[:excess]:
                del self._rotating[value]

    def __len__(self) -> int:
        with self._lock:
            return len(self._values | self._rotating.keys())

    def scrub(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values | self._rotating.keys(), key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, REDACTED)
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) + REDACTED) if m.re.groups else REDACTED, text)
        return text


SECRETS = SecretRegistry()


def scrub(value: Any) -> Any:
    if isinstance(value, str):
        return SECRETS.scrub(value)
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_KEYS.search(k) and v else scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, BaseException):
        return SECRETS.scrub(f"{type(value).__name__}: {value}")
    return value


def _scrub_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        value = event_dict[key]
        if _SECRET_KEYS.search(key) and value and key not in ("token_env",):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = scrub(value)
    return event_dict


def _scrub_rendered(_logger: Any, _method: str, rendered: Any) -> Any:
    # Last line of defence: the rendered line, including formatted tracebacks.
    return SECRETS.scrub(rendered) if isinstance(rendered, str) else rendered


def configure_logging(
    fmt: str | None = None, level: str = "info", stream: TextIO | None = None
) -> None:
    """JSON unless `fmt == "console"` (default: console on a terminal, JSON otherwise)."""
    stream = stream or sys.stderr
    if fmt is None:
        fmt = "console" if stream.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _scrub_processor,
    ]
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _scrub_processor,
            renderer,
            _scrub_rendered,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    # Third-party loggers: their warnings, and httpx request lines only when debugging.
    for name in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(name).setLevel(
            logging.DEBUG if level.lower() == "debug" else logging.WARNING
        )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
