"""The pipeline review report: the "CI/CD pipeline performance visual guide" regenerated from
measured data — from the state store (`report --config`, and `/report` live in `serve`) or from
Prometheus (`report --prometheus URL --since 7d`), as HTML, markdown or JSON."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from exporter.config import Config
from exporter.report.build import build
from exporter.report.from_store import store_input
from exporter.report.model import Report
from exporter.report.render import CONTENT_TYPES, RENDERERS
from exporter.store import Store

StartResponse = Callable[..., Any]


def store_report(store: Store | None, config: Config) -> Report:
    return build(store_input(store, config))


class ReportPage:
    """`/report` (HTML), `/report?format=markdown|json`: computed from the store, at most once
    per REUSE_SECONDS — reading every series holds the store's lock (0.6 s at 100k series), and
    the page is unauthenticated: a burst of requests must not stall recording and scrapes."""

    REUSE_SECONDS = 10.0

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self._lock = threading.Lock()
        self._built: tuple[float, Report] | None = None

    def report(self) -> Report:
        with self._lock:
            now = time.monotonic()
            if self._built is None or now - self._built[0] >= self.REUSE_SECONDS:
                self._built = (now, store_report(self.store, self.config))
            return self._built[1]

    def wsgi(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = parse_qs(str(environ.get("QUERY_STRING") or ""))
        kind = (query.get("format") or ["html"])[0]
        if kind not in RENDERERS:
            start_response("400 Bad Request", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"format: one of {', '.join(RENDERERS)}\n".encode()]
        body = RENDERERS[kind](self.report()).encode()
        start_response(
            "200 OK",
            [
                ("Content-Type", CONTENT_TYPES[kind]),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]


__all__ = ["Report", "ReportPage", "store_report"]
