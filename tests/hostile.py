"""A small hostile HTTP server for the tests: answers that trickle one byte at a time, to show that
the exporter's timeout bounds a whole request and not only each socket read."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Trickle:
    """Sends a valid HTTP/1.1 response, `every` seconds per byte: headers first (`slow_headers`)
    or the body only. Records how many bytes each connection was sent before the peer left."""

    body: bytes = b'{"total_count": 0, "workflow_runs": []}'
    every: float = 0.1
    slow_headers: bool = False
    sent: list[int] = field(default_factory=list)
    url: str = ""

    def response(self) -> tuple[bytes, bytes]:
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(self.body)}\r\n\r\n".encode()
        )
        return head, self.body


@contextmanager
def trickling_server(trickle: Trickle) -> Iterator[Trickle]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        head, body = trickle.response()
        count = 0
        try:
            conn.recv(65536)
            slow, fast = (head + body, b"") if trickle.slow_headers else (body, head)
            conn.sendall(fast)
            for byte in slow:
                if stop.is_set():
                    break
                conn.sendall(bytes([byte]))
                count += 1
                time.sleep(trickle.every)
        except OSError:
            pass
        finally:
            trickle.sent.append(count)
            conn.close()

    workers: list[threading.Thread] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            worker = threading.Thread(target=serve, args=(conn,), daemon=True)
            workers.append(worker)
            worker.start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    trickle.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        yield trickle
    finally:
        stop.set()
        thread.join(2)
        for worker in workers:
            worker.join(2)
        listener.close()
