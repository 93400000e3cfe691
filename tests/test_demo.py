"""`make demo`: the simulators and the real exporter, populated metrics within 15 seconds."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import httpx

from tests.helpers import ROOT, Exposition, free_port, wait_for


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
