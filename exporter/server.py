"""HTTP endpoints: /metrics, /healthz, /readyz and a landing page, on a threaded WSGI server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from exporter import __version__

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Readiness:
    """Each source's state: `pending` until its first poll ends, then `ok` or `failed`."""

    def __init__(self, sources: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._state = dict.fromkeys(sources, "pending")

    def set_sources(self, sources: Iterable[str]) -> None:
        with self._lock:
            self._state = {s: self._state.get(s, "pending") for s in sources}

    def mark(self, source: str, ok: bool) -> None:
        with self._lock:
            self._state[source] = "ok" if ok else "failed"

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self._state)

    @property
    def ready(self) -> bool:
        return all(state != "pending" for state in self.snapshot().values())


_LANDING = """<!doctype html>
<html><head><meta charset="utf-8"><title>ci-pipeline-exporter</title></head>
<body><h1>ci-pipeline-exporter {version}</h1>
<ul><li><a href="metrics">/metrics</a></li><li><a href="healthz">/healthz</a></li>
<li><a href="readyz">/readyz</a></li></ul></body></html>
"""


def make_app(registry: CollectorRegistry, readiness: Readiness) -> WSGIApp:
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            body: Iterable[bytes] = metrics_app(environ, start_response)
            return body
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        if path == "/readyz":
            sources = readiness.snapshot()
            ready = readiness.ready
            payload = json.dumps({"ready": ready, "sources": sources}).encode()
            status = "200 OK" if ready else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [payload]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [_LANDING.format(version=__version__).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found\n"]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    disable_nagle_algorithm = True  # small responses in two writes: avoid the 40 ms ACK delay

    def log_message(self, format: str, *args: Any) -> None:
        """Access logs are not emitted: scrapes every few seconds would drown the useful lines."""


class HttpServer:
    def __init__(self, host: str, port: int, app: WSGIApp) -> None:
        self._server = make_server(host, port, app, _ThreadingServer, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self.host = host
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
