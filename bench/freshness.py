"""Freshness: seconds from a run's completion in the simulator to its appearance in /metrics,
against the poll interval.

    python -m bench.freshness [--repositories 50] [--interval 10] [--seconds 90] [--write-doc]

The simulator (`bench` scenario) runs at 10× real time; the exporter is `serve` in its own process;
this script scrapes /metrics every 0.25 s and maps each attempt's completion (simulated time) to
real time through the simulator's clock.
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
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.report import machine, update_section
from bench.scale import TOKEN


def observed(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "ci_pipeline_exporter_runs_observed":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["repository"]] = sample.value
    return out


def start_simulator(repositories: int, speed: float) -> tuple[subprocess.Popen[str], str]:
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "simulate",
            "--scenario",
            "bench",
            "--repositories",
            str(repositories),
            "--token",
            TOKEN,
            "--speed",
            str(speed),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert sim.stdout is not None
    return sim, str(json.loads(sim.stdout.readline())["url"])


def start_exporter(
    sim_url: str, repositories: int, interval: float, port: int
) -> subprocess.Popen[bytes]:
    tmp = Path(tempfile.mkdtemp())
    config = tmp / "config.yaml"
    repos = [
        {"name": f"acme/repo-{i}", "actions_cache": {"enabled": False}} for i in range(repositories)
    ]
    github = {
        "api_url": sim_url,
        "token_env": "BENCH_TOKEN",
        "poll_interval": f"{interval}s",
        "lookback": "1d",
        "repositories": repos,
    }
    config.write_text(yaml.safe_dump({"state": {"path": str(tmp / "state.db")}, "github": github}))
    command = [
        sys.executable,
        "-m",
        "exporter",
        "serve",
        "--config",
        str(config),
        "--listen",
        f"127.0.0.1:{port}",
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "BENCH_TOKEN": TOKEN},
    )


def wait_ready(url: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


Timeline = dict[str, list[tuple[float, float]]]


def watch(url: str, seconds: float) -> Timeline:
    """When each repository's observed-runs counter changed, scraping every 0.25 s."""
    timeline: Timeline = defaultdict(list)
    start = time.time()
    while time.time() - start < seconds:
        now = time.time()
        for repo, value in observed(url).items():
            if not timeline[repo] or timeline[repo][-1][1] != value:
                timeline[repo].append((now, value))
        time.sleep(0.25)
    return timeline


def lags(
    truth: dict[str, Any], timeline: Timeline, real: Callable[[float], float], since: float
) -> list[float]:
    """Completion (simulated time mapped to real time) → first scrape that shows it."""
    found = []
    completions: dict[str, list[float]] = defaultdict(list)
    for attempt in truth["attempts"]:
        completions[attempt["repository"]].append(max(j["completed_at"] for j in attempt["jobs"]))
    for repo, ends in completions.items():
        for index, end in enumerate(sorted(ends)):
            done_at = real(end)
            if done_at < since:
                continue  # completed before the measurement was steady
            seen = next((t for t, value in timeline[repo] if value >= index + 1), None)
            if seen is not None:
                found.append(max(0.0, seen - done_at))
    return sorted(found)


def report(args: argparse.Namespace, measured: list[float]) -> str:
    row = (
        f"| {args.repositories} | {args.interval:g} | {statistics.median(measured):.1f} | "
        f"{measured[int(0.9 * (len(measured) - 1))]:.1f} | {measured[-1]:.1f} | "
        f"{'met' if measured[-1] <= args.interval + 2 else 'missed'} |"
        if measured
        else "| no completions measured |"
    )
    return "\n".join(
        [
            f"Command: `python -m bench.freshness --repositories {args.repositories} --interval {args.interval:g} "
            f"--seconds {args.seconds:g} --write-doc`.",
            f"Machine: {machine()}. Simulator at {args.speed:g}× real time; poll interval {args.interval:g} s; "
            f"{len(measured)} run attempts completed during the measurement.",
            "",
            "| repositories | poll interval s | median s | p90 s | max s | goal (interval + 2 s) |",
            "|---|---|---|---|---|---|",
            row,
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repositories", type=int, default=50)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    sim, sim_url = start_simulator(args.repositories, args.speed)
    port = 19600
    exporter = start_exporter(sim_url, args.repositories, args.interval, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        start = time.time()
        timeline = watch(url, args.seconds)
        with httpx.Client(base_url=sim_url, timeout=300) as client:
            clock = client.get("/_sim/clock").json()
            real_end = time.time()
            truth = client.get("/_sim/truth").json()
    finally:
        exporter.terminate()
        exporter.wait(20)
        sim.terminate()
        sim.wait(10)

    def real(sim_time: float) -> float:
        return float(real_end - (clock["now"] - sim_time) / args.speed)

    text = report(args, lags(truth, timeline, real, start + args.interval))
    print(text)
    if args.write_doc:
        update_section("Freshness", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
