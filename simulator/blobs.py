"""Signed-URL storage on its own loopback port (another origin, like GitHub's blob storage): artifact
zips and job logs behind the API's 302 redirects. It records whether a request carried an
Authorization header: the exporter must never send the GitHub token here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from simulator.loopback import LoopbackServer

# name → (bytes or None when gone)
Resolver = Callable[[str], bytes | None]


class BlobServer:
    def __init__(
        self, resolve: Resolver, host: str = "127.0.0.1", port: int = 0, ttl: float = 60.0
    ) -> None:
        self.resolve = resolve
        self.ttl = ttl
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                """Kept in memory, not printed."""

            def do_GET(self) -> None:
                split = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(split.query).items()}
                entry = {
                    "path": split.path,
                    "authorization": "Authorization" in self.headers,
                    "t": time.time(),
                }
                expires = float(query.get("expires", "0") or 0)
                body: bytes | None
                if split.path == "/loop":
                    with server._lock:
                        server.requests.append({**entry, "status": 302})
                    self.send_response(302)
                    self.send_header("Location", "/loop")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if expires < time.time():
                    status, body = 403, b"<Error><Code>AuthenticationFailed</Code></Error>"
                else:
                    body = server.resolve(split.path)
                    status = 200 if body is not None else 404
                    body = body if body is not None else b"<Error><Code>BlobNotFound</Code></Error>"
                entry["status"] = status
                with server._lock:
                    server.requests.append(entry)
                self.send_response(status)
                self.send_header(
                    "Content-Type",
                    "application/zip" if split.path.endswith(".zip") else "text/plain",
                )
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._http = LoopbackServer(Handler, host, port, "blob-sim")
        self.server = self._http.server

    @property
    def url(self) -> str:
        return self._http.url

    def signed(self, path: str) -> str:
        return f"{self.url}{path}?sig=sim-signature&expires={int(time.time() + self.ttl)}"

    def start(self) -> None:
        self._http.start()

    def stop(self) -> None:
        self._http.stop()
