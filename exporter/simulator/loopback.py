"""The threaded loopback HTTP server the simulators (GitHub API, blob storage, registry) run on."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    def __init__(
        self, handler: type[BaseHTTPRequestHandler], host: str, port: int, name: str
    ) -> None:
        self.server = ThreadingHTTPServer((host, port), handler)
        # Daemon request threads: a stop never waits for a client's idle keep-alive connection.
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
