"""`make demo`: the simulators and the real exporter, populated metrics within 15 seconds."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.helpers import ROOT, Exposition, free_port, simulator_cmd, wait_for


def test_make_demo_serves_populated_metrics_within_15_seconds() -> None:
    """`make demo` prints the report's URL first, and serves cicd_pipeline_run_duration_seconds_count
    > 0 within 15 s; new runs keep arriving (time is compressed); SIGTERM stops it."""
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen(
        [
            "make",
            "--no-print-directory",
            "demo",
            f"DEMO_ARGS=--listen 127.0.0.1:{port} --log-format json",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ},
    )
    try:

        def count() -> float:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            return Exposition.parse(text).total("cicd_pipeline_run_duration_seconds_count")

        first = wait_for(lambda: count() > 0 and count(), 15, message="populated demo metrics")
        assert time.monotonic() - started < 15
        wait_for(lambda: count() > first, 30, message="a new run in the demo")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
    urls = re.findall(r"http://\S+", out.decode())
    assert urls[:2] == [f"http://127.0.0.1:{port}/report", f"http://127.0.0.1:{port}/metrics"]


def test_demo_says_where_it_listens_and_what_to_open(tmp_path: Path) -> None:
    """On the wildcard address the demo says it listens on 0.0.0.0:PORT (it printed only
    127.0.0.1, which hid that it is reachable from elsewhere) and gives the loopback URL to open,
    which answers; stopped, it leaves no state directory of its own behind."""
    port = free_port()
    process = subprocess.Popen(
        [*simulator_cmd("demo", "--listen", f"0.0.0.0:{port}", "--log-format", "json")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"listening on 0.0.0.0:{port};" in line, line
        assert f"open http://127.0.0.1:{port}/report " in line, line
        assert f"http://127.0.0.1:{port}/metrics " in line, line
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert list(tmp_path.glob("cipe-demo-*/state.db"))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    assert not list(tmp_path.glob("cipe-demo-*"))
