"""API cost, CPU and memory per poll cycle at 1, 50 and 500 repositories, against a naive poller.

    python -m bench.scale [--sizes 1,50,500] [--write-doc]

The simulator runs in its own process (`python -m simulator simulate --scenario bench`: 5
workflows per repository, 10 jobs of 8 steps per run, a run per repository every 10 simulated
minutes); the exporter runs in this process, so CPU seconds and peak RSS are the exporter's (the
parse of this script and the naive poller included in RSS). Request counts come from the
simulator's request log.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.report import machine, update_section
from exporter.app import App
from exporter.config import validate_config

TOKEN = "bench-token"


class Simulator:
    def __init__(self, repositories: int) -> None:
        self.process = subprocess.Popen(
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
                # A GitHub App installation's hourly limit with this many repositories (5,000 +
                # 50 per repository beyond 20, at most 12,500): a day's catch-up at 500
                # repositories takes ~5,000 requests, and would otherwise pause until the hour.
                "--rate-limit",
                str(min(12_500, 5000 + 50 * max(0, repositories - 20))),
                "--log-format",
                "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = json.loads(self.process.stdout.readline())["url"]
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def requests(self) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = self.http.get("/_sim/requests").json()
        self.http.post("/_sim/requests/clear")
        return log

    def advance(self, seconds: float) -> None:
        self.http.post("/_sim/advance", params={"seconds": seconds})

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.wait(10)


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def exporter_cycle(app: App, sim: Simulator) -> dict[str, float]:
    started_cpu, started = cpu(), time.perf_counter()
    app.poll_once()
    seconds, cpu_seconds = time.perf_counter() - started, cpu() - started_cpu
    log = sim.requests()
    return {
        "requests": len(log),
        "not_modified": sum(1 for r in log if r["status"] == 304),
        "cpu": cpu_seconds,
        "wall": seconds,
    }


def naive_cycle(repositories: list[str], sim: Simulator) -> int:
    """A poller without ETags that re-reads the recent runs' jobs every cycle."""
    with httpx.Client(
        base_url=sim.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    ) as client:
        for repo in repositories:
            runs = client.get(f"/repos/{repo}/actions/runs", params={"per_page": 100}).json()[
                "workflow_runs"
            ]
            for run in runs[:20]:
                if run["status"] == "completed":
                    client.get(
                        f"/repos/{repo}/actions/runs/{run['id']}/jobs", params={"per_page": 100}
                    )
    return len(sim.requests())


def measure(size: int, tmp: Path) -> dict[str, Any]:
    sim = Simulator(size)
    repositories = [f"acme/repo-{i}" for i in range(size)]
    config = validate_config(
        {
            "state": {"path": str(tmp / f"state-{size}.db")},
            "limits": {"max_series_per_metric": 1_000_000},
            "github": {
                "api_url": sim.url,
                "token_env": "BENCH_TOKEN",
                "lookback": "1d",
                "timeout": "60s",
                "repositories": [
                    {"name": r, "actions_cache": {"enabled": False}} for r in repositories
                ],
            },
        }
    )
    app = App(config, environ={"BENCH_TOKEN": TOKEN})
    try:
        catch_up = exporter_cycle(app, sim)
        exporter_cycle(app, sim)  # the window narrows from lookback to the re-run window once
        idle = exporter_cycle(app, sim)
        if idle["requests"] < size:
            raise SystemExit(
                f"{size} repositories: the idle cycle sent {idle['requests']} requests "
                "(paused for the rate limit?); not a measurement"
            )
        sim.advance(600)
        busy = exporter_cycle(app, sim)
        naive_idle = naive_cycle(repositories, sim)
        naive_idle_again = naive_cycle(repositories, sim)
        series = sum(1 for _ in app.store.aggregates.items())
    finally:
        app.close()
        sim.stop()
    return {
        "size": size,
        "catch_up": catch_up,
        "idle": idle,
        "busy": busy,
        "naive_idle": min(naive_idle, naive_idle_again),
        "series": series,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,50,500")
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            result = measure(size, Path(tmp))
            rows.append(result)
            print(json.dumps(result), file=sys.stderr)
    table = [
        "| repositories | idle requests (304) | minimum | naive poller, idle | naive ÷ ours | busy requests | "
        "CPU s idle | CPU s busy | CPU s catch-up | peak RSS MiB | stored series |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["naive_idle"] / max(1, r["idle"]["requests"])
        table.append(
            f"| {r['size']} | {r['idle']['requests']} ({r['idle']['not_modified']}) | {r['size']} | {r['naive_idle']} | "
            f"{ratio:.1f}× | {r['busy']['requests']} | {r['idle']['cpu']:.2f} | {r['busy']['cpu']:.2f} | "
            f"{r['catch_up']['cpu']:.1f} | {r['rss_mib']:.0f} | {r['series']} |"
        )
    text = "\n".join(
        [
            f"Command: `python -m bench.scale --sizes {args.sizes} --write-doc`.",
            f"Machine: {machine()}. Scenario `bench`: 5 workflows per repository, 10 jobs × 8 steps per run,",
            "a run per repository every 10 simulated minutes, 6 runs of history. Idle: a cycle with nothing new",
            "(after the catch-up and the one cycle that narrows the window). Busy: after 10 simulated",
            "minutes (one new run per repository). The naive poller lists runs without ETags and re-reads the",
            "jobs of the recent completed runs every cycle. Peak RSS is this benchmark process (exporter and",
            "naive poller; it only grows, so later rows include earlier ones).",
            "",
            *table,
        ]
    )
    print(text)
    if args.write_doc:
        update_section("API cost, CPU and memory per poll cycle", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
