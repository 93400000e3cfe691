"""Organisation scale: samples per repository, /metrics time idle and while runs arrive, and the
exporter's peak RSS, with the default settings; and the memory of a long history.

    python -m bench.series [--sizes 200,500] [--write-doc]
    python -m bench.series --long-history 500 [--runs 3000] [--write-doc]

The simulator (`org` scenario: one CI workflow of 8 jobs × 4 steps, 5 runs a day on two branches)
and `serve` each run in their own process; RSS is the exporter process's peak (VmHWM). Only the
poll interval (10 s, so runs are picked up while the scrapes are timed) and the lookback differ
from the defaults. Idle: after every run is recorded. Busy: a new run arrives in every repository
and the scrapes are timed while the polls record them, until a scrape shows every new run (p90 and
maximum of those scrapes: the ones that compete with recording).

Long history: a state file whose run-duration and critical-path histograms (6 per repository, the
fine 1 s layout) have each seen `--runs` runs of 10 to 30 minutes — years of history — is loaded
by the store in this process; the memory of its histogram slots is traced (tracemalloc), and
compared with the same slots held as a dict per series (the representation before).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import CollectorRegistry

from bench.report import machine, update_section
from exporter import metrics as m
from exporter.config import validate_config
from exporter.exposition import Exposition
from exporter.store import Store
from exporter.store.aggregates import HistogramSeries
from exporter.store.layouts import FineLayout

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


def busy_scrapes(client: httpx.Client, target: float, seconds: float) -> list[float]:
    """Scrape times while the polls record new runs: from the first scrape to the last one that
    saw the count of observed runs change, scraping until it reaches `target` (or `seconds`
    pass): the scrapes after recording ended are left out."""
    times: list[float] = []
    counts: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        response = client.get("/metrics", headers={"Accept-Encoding": "identity"})
        times.append(time.perf_counter() - started)
        counts.append(observed(response.text))
        if counts[-1] >= target:
            break
    changed = [i for i in range(1, len(counts)) if counts[i] != counts[i - 1]]
    return times[: changed[-1] + 1] if changed else times


def p90(values: list[float]) -> float:
    return (
        statistics.quantiles(values, n=10, method="inclusive")[8] if len(values) > 1 else values[0]
    )


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
            # Every repository gets one new run: recording ends when all of them are observed.
            busy = busy_scrapes(client, observed(text) + size, 45)
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
        "busy_p90": p90(busy),
        "busy_max": max(busy),
        "busy_scrapes": len(busy),
        "rss_mib": rss,
    }


# -- long history ------------------------------------------------------------------------------------
def _fine_series(repo: str) -> list[tuple[str, tuple[str, ...]]]:
    """A repository's fine-layout histograms: run durations by branch and result, critical paths
    by branch."""
    runs = [
        (m.RUN_DURATION.name, (repo, "CI", branch, "push", result))
        for branch in ("main", "other")
        for result in ("success", "failure")
    ]
    return runs + [(m.RUN_CRITICAL_PATH.name, (repo, "CI", branch)) for branch in ("main", "other")]


def write_history(path: Path, repositories: int, runs: int) -> None:
    """A state file holding `runs` observations of 10 to 30 minutes in every fine series."""
    Store(path).close()
    rng = random.Random(1)
    layout = FineLayout()
    db = sqlite3.connect(path)
    for index in range(repositories):
        rows = []
        for metric, labels in _fine_series(f"acme/repo-{index}"):
            values = [round(rng.uniform(600, 1800), 3) for _ in range(runs)]
            slots = Counter(layout.slot(v) for v in values)
            row = (metric, json.dumps(list(labels)), sum(values), runs, json.dumps(slots))
            rows.append(row)
        db.executemany("INSERT INTO series VALUES (?, ?, 0, ?, ?, ?, 0, 0)", rows)
    db.commit()
    db.close()


def _traced(build: Any) -> tuple[Any, int]:
    """What `build()` returns, and the bytes it left allocated."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    value = build()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return value, held


def long_history(repositories: int, runs: int) -> dict[str, Any]:
    path = Path(tempfile.mkdtemp()) / "state.db"
    write_history(path, repositories, runs)
    store, held = _traced(lambda: Store(path))
    series = [s for _, _, s in store.aggregates.items() if isinstance(s, HistogramSeries)]
    used = sum(len(s.slots) for s in series)
    _, as_dicts = _traced(lambda: [dict(s.slots.items()) for s in series])
    config = validate_config(
        {"github": {"repositories": [{"name": f"acme/repo-{i}"} for i in range(repositories)]}}
    )
    exposition = Exposition(store, config, CollectorRegistry())
    started = time.perf_counter()
    exposition.render()
    render = time.perf_counter() - started
    store.close()
    return {
        "repositories": repositories,
        "series": len(series),
        "runs": runs,
        "slots_per_series": used / len(series),
        "store_mib": held / 2**20,
        "dicts_mib": as_dicts / 2**20,
        "bytes_per_slot": held / used,
        "render_s": render,
    }


def write_long_history(args: argparse.Namespace) -> int:
    result = long_history(args.long_history, args.runs)
    print(json.dumps(result), file=sys.stderr)
    table = [
        "| repositories | fine histograms | runs each | used slots each | loaded store MiB | "
        "the slots as dicts MiB (before) | bytes per used slot | first /metrics render ms |",
        "|---|---|---|---|---|---|---|---|",
        f"| {result['repositories']} | {result['series']:,} | {result['runs']:,} | "
        f"{result['slots_per_series']:.0f} | {result['store_mib']:.1f} | "
        f"{result['dicts_mib']:.1f} | {result['bytes_per_slot']:.1f} | "
        f"{result['render_s'] * 1000:.0f} |",
    ]
    command = f"python -m bench.series --long-history {args.long_history} --runs {args.runs}"
    text = "\n".join(
        [
            f"Command: `{command} --write-doc`.",
            f"Machine: {machine()}. " + " ".join(__doc__.split("\n\n")[3].split()),
            "",
            *table,
        ]
    )
    print(text)
    if args.write_doc:
        update_section("Long history: histogram memory", text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="200,500")
    parser.add_argument("--label", default="", help="a row label (e.g. before / after)")
    parser.add_argument("--long-history", type=int, metavar="REPOSITORIES", help="see above")
    parser.add_argument("--runs", type=int, default=3000, help="runs per long-history series")
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    if args.long_history:
        return write_long_history(args)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        result = measure(size)
        print(json.dumps(result), file=sys.stderr)
        rows.append(result)
    table = [
        "| repositories | samples per scrape | per repository | exposition MB | /metrics idle median ms | idle, gzip ms | while runs are recorded: p90 / max ms (scrapes) | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    table += [
        f"| {r['size']} | {r['samples']:,} | {r['per_repository']:.0f} | {r['bytes'] / 1e6:.1f} | "
        f"{r['idle_median'] * 1000:.0f} | {r['idle_gzip_median'] * 1000:.0f} | "
        f"{r['busy_p90'] * 1000:.0f} / {r['busy_max'] * 1000:.0f} ({r['busy_scrapes']}) | "
        f"{r['rss_mib']:.0f} |"
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
