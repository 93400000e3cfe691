"""HttpServer in-process with the real app: idle timeout, shutdown, a second listener, logging."""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, make_wsgi_app

from exporter.logging import configure_logging
from exporter.server import HttpServer, Readiness, ServerLimits, make_app
from tests.helpers import wait_for


def _app() -> Any:
    registry = CollectorRegistry()
    Counter("demo_things", "Things.", registry=registry).inc(3)
    return make_app(make_wsgi_app(registry), Readiness(["github:acme/webapp"]))


@contextmanager
def _running(server: HttpServer) -> Iterator[str]:
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def _half_request(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return conn


def _closed_by_peer(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        return conn.recv(1024) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def test_idle_timeout_closes_stalled_connections() -> None:
    """Connections stalled mid-request are closed by the server once `channel_timeout` passes
    without a byte, while complete requests keep being answered."""
    limits = ServerLimits(channel_timeout=1, cleanup_interval=1)
    with _running(HttpServer("127.0.0.1", 0, _app(), limits)) as url:
        held = [_half_request(int(url.rsplit(":", 1)[1])) for _ in range(10)]
        assert not any(_closed_by_peer(conn) for conn in held)
        wait_for(lambda: all(_closed_by_peer(conn) for conn in held), 15, message="closed")
        assert "demo_things_total 3.0" in httpx.get(f"{url}/metrics").text
        for conn in held:
            conn.close()


def test_stop_closes_everything_promptly() -> None:
    """stop() returns promptly with a keep-alive client and a stalled request still connected, and
    the port is free afterwards: nothing accepts on it and a new server binds it."""
    server = HttpServer("127.0.0.1", 0, _app())
    port = server.port
    server.start()
    client = httpx.Client()
    assert client.get(f"http://127.0.0.1:{port}/healthz").text == "ok\n"
    stalled = _half_request(port)
    started = time.monotonic()
    server.stop()
    took = time.monotonic() - started
    assert took < 3  # not the 30 s idle timeout nor the worker grace period
    wait_for(lambda: _closed_by_peer(stalled), 5, message="stalled connection closed")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    again = HttpServer("127.0.0.1", port, _app())
    again.stop()
    client.close()
    stalled.close()


def test_second_listener_with_its_own_app() -> None:
    """Two HttpServers in one process each serve their own WSGI app on their own port; stopping
    one leaves the other serving."""

    def hook(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("202 Accepted", [("Content-Type", "text/plain")])
        return [b"got " + body]

    metrics = HttpServer("127.0.0.1", 0, _app())
    webhook = HttpServer("127.0.0.1", 0, hook)
    assert metrics.port != webhook.port
    with _running(metrics) as metrics_url:
        with _running(webhook) as hook_url:
            answer = httpx.post(f"{hook_url}/hook", content=b"payload")
            assert (answer.status_code, answer.text) == (202, "got payload")
            assert httpx.get(f"{metrics_url}/healthz").text == "ok\n"
        assert httpx.get(f"{metrics_url}/healthz").text == "ok\n"


def test_errors_logged_through_structlog_without_access_lines() -> None:
    """An app error is answered 500 and logged as one JSON line from the `waitress` logger with its
    traceback; successful requests leave no access line."""

    def broken(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("kaboom")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fine"]

    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    with _running(HttpServer("127.0.0.1", 0, broken)) as url:
        assert httpx.get(f"{url}/ok").text == "fine"
        assert httpx.get(f"{url}/boom").status_code == 500
        wait_for(lambda: "kaboom" in stream.getvalue(), 5, message="error logged")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["logger"] == "waitress"
    assert errors[0]["event"] == "Exception while serving /boom"
    assert "RuntimeError: kaboom" in errors[0]["exception"]
    assert not [line for line in lines if "/ok" in json.dumps(line)]


def test_unknown_host_is_a_one_line_os_error() -> None:
    """A listen host that does not resolve fails as an OSError naming the address (serve turns it
    into a one-line message), not waitress's ValueError."""
    with pytest.raises(OSError, match=r"cannot listen on no-such-host\.invalid:9469"):
        HttpServer("no-such-host.invalid", 9469, _app())


def test_a_port_in_use_is_a_one_line_error_naming_the_address() -> None:
    """A busy port names the address it could not listen on, not only the OS's reason."""
    first = HttpServer("127.0.0.1", 0, _app())
    try:
        with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{first.port}: .*in use"):
            HttpServer("127.0.0.1", first.port, _app())
    finally:
        first.stop()
