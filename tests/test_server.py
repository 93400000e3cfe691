"""HTTP endpoints of `serve` and its shutdown."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx

from exporter.simulator.github import Faults, GitHubSimulator
from tests.helpers import TOKEN, exporter_cmd, free_port, serve, wait_for


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
    assert pick and all(line in after for line in pick)
