"""Organisation scale: samples per repository, /metrics time idle and while runs arrive, and the
exporter's peak RSS, with the default settings.

    python -m bench.series [--sizes 200,500] [--write-doc]

The simulator (`org` scenario: one CI workflow of 8 jobs × 4 steps, 5 runs a day on two branches)
and `serve` each run in their own process; RSS is the exporter process's peak (VmHWM). Only the
poll interval (10 s, so runs are picked up while the scrapes are timed) and the lookback differ
from the defaults. Idle: after every run is recorded. Busy: a new run arrives in every repository
and the scrapes are timed while the polls record them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.report import machine, update_section

TOKEN = "bench-token"
RUN_INTERVAL = 86400.0 / 5
PORT = 19700


def start_simulator(repositories: int) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "simulator", "simulate", "--scenario", "org"]
    command += ["--repositories", str(repositories), "--token", TOKEN, "--log-format", "json"]
    sim = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert sim.stdout is not None
    return sim, str(json.loads(sim.stdout.readline())["url"])


def start_exporter(sim_url: str, repositories: int, tmp: Path) -> subprocess.Popen[bytes]:
    config = tmp / "config.yaml"
    github = {
        "api_url": sim_url,
        "token_env": "BENCH_TOKEN",
        "poll_interval": "10s",
        "lookback": "2d",
        "repositories": [{"name": f"acme/repo-{i}"} for i in range(repositories)],
    }
    config.write_text(yaml.safe_dump({"state": {"path": str(tmp / "state.db")}, "github": github}))
    command = [sys.executable, "-m", "exporter", "serve", "--config", str(config)]
    command += ["--listen", f"127.0.0.1:{PORT}", "--log-format", "json"]
    env = {**os.environ, "BENCH_TOKEN": TOKEN}
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def observed(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ci_pipeline_exporter_runs_observed_total{")
    )


def wait_until(predicate: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("timed out")


def scrape_times(client: httpx.Client, count: int, gzip: bool = False) -> list[float]:
    headers = {"Accept-Encoding": "gzip"} if gzip else {"Accept-Encoding": "identity"}
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.get("/metrics", headers=headers).raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(size: int) -> dict[str, Any]:
    sim, sim_url = start_simulator(size)
    tmp = Path(tempfile.mkdtemp())
    exporter = start_exporter(sim_url, size, tmp)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=120) as client:
            truth = len(httpx.get(f"{sim_url}/_sim/truth", timeout=300).json()["attempts"])
            wait_until(lambda: observed(client.get("/metrics").text) >= truth, 1800)
            time.sleep(12)  # one more idle cycle
            text = client.get("/metrics").text
            samples = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
            idle = scrape_times(client, 7)
            idle_gzip = scrape_times(client, 7, gzip=True)
            httpx.post(f"{sim_url}/_sim/advance", params={"seconds": RUN_INTERVAL}, timeout=60)
            busy: list[float] = []
            deadline = time.monotonic() + 25
            while time.monotonic() < deadline:
                busy += scrape_times(client, 1)
            rss = peak_rss_mib(exporter.pid)
    finally:
        exporter.terminate()
        exporter.wait(30)
        sim.terminate()
        sim.wait(10)
    return {
        "size": size,
        "samples": samples,
        "per_repository": samples / size,
        "bytes": len(text.encode()),
        "idle_median": statistics.median(idle),
        "idle_gzip_median": statistics.median(idle_gzip),
        "busy_median": statistics.median(busy),
        "busy_scrapes": len(busy),
        "rss_mib": rss,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="200,500")
    parser.add_argument("--label", default="", help="a row label (e.g. before / after)")
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        result = measure(size)
        print(json.dumps(result), file=sys.stderr)
        rows.append(result)
    table = [
        "| repositories | samples per scrape | per repository | exposition MB | /metrics idle median ms | idle, gzip ms | while runs arrive ms (scrapes) | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    table += [
        f"| {r['size']} | {r['samples']:,} | {r['per_repository']:.0f} | {r['bytes'] / 1e6:.1f} | "
        f"{r['idle_median'] * 1000:.0f} | {r['idle_gzip_median'] * 1000:.0f} | "
        f"{r['busy_median'] * 1000:.0f} ({r['busy_scrapes']}) | {r['rss_mib']:.0f} |"
        for r in rows
    ]
    text = "\n".join(
        [
            f"Command: `python -m bench.series --sizes {args.sizes} --write-doc`.",
            f"Machine: {machine()}. " + " ".join(__doc__.split("\n\n")[2].split()),
            "",
            *table,
        ]
    )
    print(text)
    if args.write_doc:
        update_section("Organisation scale: series, scrape time, memory", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
