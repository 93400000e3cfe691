"""HTTP endpoints: /metrics, /healthz, /readyz and a landing page, served by waitress."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask

from exporter import __version__

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Readiness:
    """Each source's state: `pending` until its first poll ends, then `ok` or `failed`."""

    def __init__(self, sources: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._state = dict.fromkeys(sources, "pending")

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
<ul><li><a href="report">/report</a> (the pipeline review)</li><li><a href="metrics">/metrics</a></li><li><a href="healthz">/healthz</a></li>
<li><a href="readyz">/readyz</a></li></ul></body></html>
"""


def make_app(
    metrics_app: WSGIApp, readiness: Readiness, report_app: WSGIApp | None = None
) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            body: Iterable[bytes] = metrics_app(environ, start_response)
            return body
        if path == "/report" and report_app is not None:
            return report_app(environ, start_response)
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


@dataclass(frozen=True)
class ServerLimits:
    """Bounds of one listener. Requests are read by waitress's single I/O thread and reach a worker
    only once complete, so slow or stalled clients cost a connection slot, never a worker."""

    threads: int = 8  # workers answering complete requests; a /metrics render is CPU-bound
    backlog: int = 1024  # kernel accept queue (capped by net.core.somaxconn)
    connection_limit: int = 200  # open connections; further clients wait in the backlog
    channel_timeout: int = 30  # seconds without a byte before a connection is closed
    cleanup_interval: int = 5  # how often connections are checked against channel_timeout
    max_request_header_size: int = 64 * 1024
    max_request_body_size: int = 1024 * 1024


# "Task queue depth is N" on every request that waits for a worker: noise during scrape bursts.
logging.getLogger("waitress.queue").setLevel(logging.ERROR)


Rejected = Callable[[int, dict[str, str]], None]


class _ErrorTask(ErrorTask):  # type: ignore[misc]  # waitress has no type hints
    """waitress answers malformed and oversized requests itself, before the app sees them; this
    tells the listener's `on_rejected` (status, request headers) so those answers count too."""

    def execute(self) -> None:
        hook: Rejected | None = getattr(self.channel.server, "on_rejected", None)
        if hook is not None:
            status = int(getattr(self.request.error, "code", 400))
            # waitress keys headers the CGI way (X_GITHUB_EVENT): back to x-github-event.
            headers = {
                str(k).lower().replace("_", "-"): str(v)
                for k, v in (self.request.headers or {}).items()
            }
            hook(status, headers)
        super().execute()


class _Channel(HTTPChannel):  # type: ignore[misc]
    error_task_class = _ErrorTask


class HttpServer:
    """A WSGI app on `host:port` (IPv4 or IPv6; port 0 picks one, `.port` tells which), served by
    waitress from a background thread. No access log; waitress's errors go to the `waitress`
    stdlib logger, bridged into structlog."""

    def __init__(
        self,
        host: str,
        port: int,
        app: WSGIApp,
        limits: ServerLimits | None = None,
        on_rejected: Rejected | None = None,
    ) -> None:
        self.host = host
        self._map: dict[int, Any] = {}
        try:
            self._server = create_server(
                app,
                map=self._map,
                listen=_bracketed(host, port),
                asyncore_use_poll=True,  # select() fails past 1024 descriptors
                **asdict(limits or ServerLimits()),
            )
        except ValueError:  # waitress's getaddrinfo failure: "Invalid host/port specified."
            wasyncore.close_all(self._map)
            raise OSError(f"cannot listen on {_bracketed(host, port)}: unknown host") from None
        except OSError as exc:
            wasyncore.close_all(self._map)
            reason = (exc.strerror or str(exc)).lower()
            raise OSError(f"cannot listen on {_bracketed(host, port)}: {reason}") from None
        listeners = [d for d in self._map.values() if isinstance(d, BaseWSGIServer)]
        for listener in listeners:
            listener.channel_class = _Channel
            listener.on_rejected = on_rejected
        self.port = int(listeners[0].effective_port)
        self._trigger = listeners[0].trigger
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)

    @property
    def listen(self) -> str:
        return _bracketed(self.host, self.port)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listening socket and every connection, then give workers up to `timeout`
        seconds to finish the request in hand."""
        if self._thread.is_alive():
            # Closed from the I/O thread itself (a thunk run when the trigger is pulled); its loop
            # then ends, having nothing left to watch.
            self._trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
            self._thread.join(timeout)
        wasyncore.close_all(self._map)  # never started, or the loop did not end in time
        self._server.task_dispatcher.shutdown(timeout=timeout)


def _bracketed(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
