"""HTTP endpoints of `serve` and its shutdown."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

from exporter import metrics as m
from simulator.github import Faults, GitHubSimulator
from tests.helpers import TOKEN, Exposition, exporter_cmd, free_port, serve, wait_for


def test_endpoints(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """/readyz is 503 naming the source until its first poll ends, then 200; /metrics speaks the
    text format and OpenMetrics when asked; / links the rest; unknown paths 404."""
    sim.set_faults(Faults(latency_rate=1.0, latency_seconds=1.5, path_pattern=r"/actions/runs$"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serve(config_file, port, env, tmp_path / "log"):
        first = httpx.get(f"{url}/readyz")
        assert first.status_code == 503
        assert first.json()["sources"] == {"github:acme/webapp": "pending"}
        sim.set_faults(Faults())
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 20, message="ready")
        assert httpx.get(f"{url}/readyz").json()["sources"] == {"github:acme/webapp": "ok"}
        text = httpx.get(f"{url}/metrics")
        assert text.headers["content-type"].startswith("text/plain")
        assert "cicd_pipeline_run_duration_seconds_bucket" in text.text
        om = httpx.get(
            f"{url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")
        assert httpx.get(f"{url}/healthz").text == "ok\n"
        assert 'href="metrics"' in httpx.get(f"{url}/").text
        assert httpx.get(f"{url}/nope").status_code == 404


def test_metrics_vary_and_fold_counters_from_zero(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """/metrics says `Vary: Accept, Accept-Encoding` (gzip or not: a cache must not hand a gzip
    body to a client that can't read it), and the fold and expiry counters are there at 0 for
    every metric they can count before anything folded, so rate() sees the first one."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serve(config_file, port, env, tmp_path / "log"):
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 20, message="ready")
        packed = httpx.get(f"{url}/metrics", headers={"Accept-Encoding": "gzip"})
        plain = httpx.get(f"{url}/metrics", headers={"Accept-Encoding": "identity"})
    assert packed.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    for response in (packed, plain):
        vary = {v.strip().lower() for v in response.headers["vary"].split(",")}
        assert {"accept", "accept-encoding"} <= vary
    assert "ci_pipeline_exporter_up" in packed.text  # httpx decoded the gzip body
    exp = Exposition.parse(plain.text)
    dropped = exp.by("ci_pipeline_exporter_series_dropped_total", "metric")
    expired = exp.by("ci_pipeline_exporter_series_expired_total", "metric")
    assert dropped == {(s.name,): 0.0 for s in m.ALL_METRICS if s.foldable}
    domain = [s for s in m.ALL_METRICS if s not in m.EXPORTER_METRICS]
    assert expired == {(s.name,): 0.0 for s in domain}


def test_sigterm_exits_zero_and_keeps_state(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM ends serve with exit 0 and a closed, consistent store: a restart shows the same counts."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        exporter_cmd("serve", "--config", str(config_file), "--listen", f"127.0.0.1:{port}"),
        env={"TEST_GITHUB_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 30, message="ready")
        before = httpx.get(f"{url}/metrics").text
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert b'"stopped"' in err
    with serve(config_file, port, env, tmp_path / "log"):
        after = httpx.get(f"{url}/metrics").text
    pick = [
        line
        for line in before.splitlines()
        if line.startswith("cicd_pipeline_run_duration_seconds_count")
    ]
    assert pick
    assert all(line in after for line in pick)


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


def _half_requests(port: int, count: int) -> list[socket.socket]:
    """Connections that start a request's headers and never finish them."""
    held = []
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        held.append(conn)
    return held


def _still_open(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        return conn.recv(1) != b""
    except BlockingIOError:
        return True  # nothing to read and not closed
    except ConnectionError:
        return False


def test_ipv6_listen(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """`listen: "[::1]:PORT"` in the configuration serves /metrics over IPv6 loopback."""
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    config = yaml.safe_load(config_file.read_text())
    config["listen"] = f"[::1]:{port}"
    config_file.write_text(yaml.safe_dump(config))
    url = f"http://[::1]:{port}"
    process = subprocess.Popen(
        exporter_cmd("serve", "--config", str(config_file)),
        env={**env, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: process.poll() is None and httpx.get(f"{url}/readyz").status_code == 200,
            30,
            message="ready on [::1]",
        )
        metrics = httpx.get(f"{url}/metrics")
        assert metrics.status_code == 200
        assert "cicd_pipeline_run_duration_seconds_count" in metrics.text
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f'"listen": "[::1]:{port}"' in err.decode()


def test_concurrent_scrapes(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """50 scrapers at once, each on its own connections, all get 200 and the whole exposition
    (every series of the run histogram, the same as a lone scrape shows)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with serve(config_file, port, env, tmp_path / "log"):
        wait_for(lambda: httpx.get(f"{url[:-8]}/readyz").status_code == 200, 30, message="ready")
        alone = Exposition.parse(httpx.get(url).text)
        want = alone.select("cicd_pipeline_run_duration_seconds_count")
        assert want
        start = threading.Barrier(50)

        def scraper(_: int) -> list[int]:
            start.wait()
            seen = []
            for _ in range(4):
                response = httpx.get(url, timeout=60)  # a new connection each time
                got = Exposition.parse(response.text)
                assert got.select("cicd_pipeline_run_duration_seconds_count") == want
                seen.append(response.status_code)
            return seen

        with ThreadPoolExecutor(50) as pool:
            codes = [code for codes in pool.map(scraper, range(50)) for code in codes]
    assert codes == [200] * 200


def test_stalled_requests_do_not_pin_threads(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """50 connections that send half a request and stall neither block a normal scrape (it answers
    while they are still open) nor cost a thread each in the `serve` process."""
    port = free_port()
    with serve(config_file, port, env, tmp_path / "log") as process:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 30, message="ready")
        before = _threads(process.pid)
        held = _half_requests(port, 50)
        try:
            response = httpx.get(f"{url}/metrics", timeout=10)
            assert response.status_code == 200
            assert "cicd_pipeline_run_duration_seconds_count" in response.text
            assert all(_still_open(conn) for conn in held)
            # A thread per connection would show +50; pollers and workers move by a few.
            assert _threads(process.pid) - before < 20
        finally:
            for conn in held:
                conn.close()


def test_sigterm_received_by_any_thread_stops_serve(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """The kernel hands a process's SIGTERM to any of its threads; Python runs the handler on the
    main thread only when that thread next runs bytecode. Delivered to a worker thread (as `kill`
    may do), SIGTERM still stops serve at once, with exit 0."""
    libc = ctypes.CDLL(None, use_errno=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        exporter_cmd("serve", "--config", str(config_file), "--listen", f"127.0.0.1:{port}"),
        env={**env, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 30, message="ready")
        threads = [int(t) for t in os.listdir(f"/proc/{process.pid}/task")]
        worker = max(t for t in threads if t != process.pid)
        assert libc.tgkill(process.pid, worker, signal.SIGTERM) == 0
        _, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err[-2000:]
