"""Real Prometheus and Alertmanager on loopback for the tests, and a webhook receiver."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.helpers import free_port, require_binary, wait_for


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    wait_for(
        lambda: httpx.get(url, timeout=1).status_code == 200,
        timeout,
        message=url,
        process=process,
        log=log,
    )


@contextmanager
def alertmanager(tmp: Path, webhook: str) -> Iterator[str]:
    binary = require_binary("prometheus-alertmanager")
    port = free_port()
    config = {
        "route": {
            "receiver": "test",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "test", "webhook_configs": [{"url": webhook, "send_resolved": False}]}
        ],
    }
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / "alertmanager.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.path={tmp / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/-/ready", process, log)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def prometheus(
    tmp: Path,
    *,
    targets: list[str] | None = None,
    rules: Path | None = None,
    alertmanager_url: str | None = None,
    data: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[str]:
    binary = require_binary("prometheus")
    port = free_port()
    config: dict[str, Any] = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}}
    if targets:
        config["scrape_configs"] = [
            {"job_name": "ci-pipeline-exporter", "static_configs": [{"targets": targets}]}
        ]
    if rules is not None:
        config["rule_files"] = [str(rules)]
    if alertmanager_url is not None:
        config["alerting"] = {
            "alertmanagers": [
                {"static_configs": [{"targets": [alertmanager_url.removeprefix("http://")]}]}
            ]
        }
    path = tmp / f"prometheus-{port}.yml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / f"prometheus-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={data or tmp / f'prom-{port}'}",
                f"--web.listen-address=127.0.0.1:{port}",
                *extra_args,
            ],
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/-/ready", process, log)
        yield url
    finally:
        process.terminate()
        process.wait(15)


def query(url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"query": expr}
    if at is not None:
        params["time"] = at
    response = httpx.get(f"{url}/api/v1/query", params=params, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result
