"""Webhook freshness: seconds from a job's completion to its appearance in /metrics, with
`github.webhooks` on, and the API requests the exporter makes meanwhile.

    python -m bench.webhooks [--repositories 50] [--seconds 90] [--speed 10] [--write-doc]

The simulator (`bench` scenario, 10 jobs per run) runs in this process at `speed`× real time and
sends signed workflow_job/workflow_run webhooks (pumped every 0.2 s, like GitHub's delivery delay)
to `serve`, which runs in its own process with the default 10-minute reconcile interval. This
script scrapes /metrics every 0.25 s; a job counts as visible when its repository's
`cicd_pipeline_task_run_duration_seconds_count` reaches it. Each delivery's answer time is measured
by the sender.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.freshness import wait_ready
from bench.report import machine, update_section
from bench.scale import TOKEN
from simulator.github import GitHubSimulator
from simulator.webhooks import Event, WebhookSender

SECRET = "bench-webhook-secret"
JOBS = "cicd_pipeline_task_run_duration_seconds"


class TimedSender(WebhookSender):
    """The simulator's sender, timing each answer."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.answers: list[float] = []

    def send(self, event: Event) -> int:
        started = time.perf_counter()
        status = super().send(event)
        self.answers.append(time.perf_counter() - started)
        return status


COUNT_LINE = re.compile(rf'^{JOBS}_count\{{.*?repository="([^"]+)".*\}} (\S+)$', re.M)


def job_counts(url: str) -> dict[str, float]:
    """Each repository's job count: only the lines of one family are parsed (the whole exposition
    is megabytes at 50 repositories, and a full parse took ~3 s: the scrape period would be
    measured rather than the exporter)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[str, float] = defaultdict(float)
    for repo, value in COUNT_LINE.findall(text):
        out[repo] += float(value)
    return dict(out)


def start_exporter(
    sim_url: str, repositories: int, port: int, hook_port: int
) -> subprocess.Popen[bytes]:
    tmp = Path(tempfile.mkdtemp())
    config = tmp / "config.yaml"
    github = {
        "api_url": sim_url,
        "token_env": "BENCH_TOKEN",
        "lookback": "1d",
        # The simulated clock runs `speed`× ahead of the real one: its timestamps would soon be
        # "in the future" and rejected as malformed (the default tolerance is 5 minutes).
        "clock_skew": "1d",
        "repositories": [
            {"name": f"acme/repo-{i}", "actions_cache": {"enabled": False}}
            for i in range(repositories)
        ],
        "webhooks": {"listen": f"127.0.0.1:{hook_port}", "secret_env": "BENCH_WEBHOOK_SECRET"},
    }
    config.write_text(yaml.safe_dump({"state": {"path": str(tmp / "state.db")}, "github": github}))
    command = [sys.executable, "-m", "exporter", "serve", "--config", str(config)]
    return subprocess.Popen(
        [*command, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "BENCH_TOKEN": TOKEN, "BENCH_WEBHOOK_SECRET": SECRET},
    )


def outcomes(url: str) -> dict[str, float]:
    """The exporter's webhook events by outcome: anything but recorded/duplicate is a bench fault."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        if family.name == "ci_pipeline_exporter_webhook_events":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["outcome"]] += sample.value
    return dict(out)


def watch(url: str, seconds: float) -> dict[str, list[tuple[float, float]]]:
    """When each repository's job count changed, scraping every 0.25 s."""
    timeline: dict[str, list[tuple[float, float]]] = defaultdict(list)
    start = time.time()
    while time.time() - start < seconds:
        now = time.time()
        for repo, value in job_counts(url).items():
            if not timeline[repo] or timeline[repo][-1][1] != value:
                timeline[repo].append((now, value))
        time.sleep(0.25)
    return timeline


def completions(sim: GitHubSimulator, since: float, until: float) -> dict[str, list[float]]:
    """When each job becomes due in /metrics, per repository: at its completion when that is after
    `since` (its workflow_job event), else at its run attempt's completion when that is (the
    workflow_run event records the jobs that finished before the sender started)."""
    found: dict[str, list[float]] = defaultdict(list)
    for repo, timeline in sim.timelines.items():
        for run in timeline.runs_until(until):
            for attempt in run.attempts:
                end = attempt.end
                for job in attempt.jobs:
                    due = job.completed_at if job.completed_at > since else end
                    if since < due <= until:
                        found[repo].append(due)
    return {repo: sorted(times) for repo, times in found.items()}


def settled(url: str, seconds: float = 120.0) -> dict[str, float]:
    """The job counts once the exporter's first poll is done (unchanged over three scrapes)."""
    deadline = time.time() + seconds
    last: dict[str, float] = {}
    same = 0
    while time.time() < deadline and same < 3:
        counts = job_counts(url)
        same = same + 1 if counts == last and counts else 0
        last = counts
        time.sleep(1.0)
    return last


def lags(
    done: dict[str, list[float]],
    baseline: dict[str, float],
    timeline: dict[str, list[tuple[float, float]]],
    real: dict[str, float],
) -> list[float]:
    """Each job's due time (simulated → real time) to the first scrape showing it."""
    found = []
    for repo, ends in done.items():
        for index, end in enumerate(ends):
            wanted = baseline.get(repo, 0.0) + index + 1
            seen = next((t for t, value in timeline[repo] if value >= wanted), None)
            if seen is not None:
                at = real["end"] - (real["sim_end"] - end) / real["speed"]
                found.append(max(0.0, seen - at))
    return sorted(found)


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def report(
    args: argparse.Namespace,
    measured: list[float],
    answers: list[float],
    requests: int,
    *,
    missing: int,
    handled: dict[str, float],
) -> str:
    answers = sorted(answers)
    hourly_polling = args.repositories * 3600 / 10
    return "\n".join(
        [
            f"Command: `python -m bench.webhooks --repositories {args.repositories} --seconds {args.seconds:g} "
            f"--speed {args.speed:g} --write-doc`.",
            f"Machine: {machine()}. Simulator at {args.speed:g}× real time sending webhooks (pumped every 0.2 s); "
            f"{len(measured)} jobs due in /metrics during the measurement (completed, or for jobs that "
            f"finished before the sender started, their run completed), {missing} not visible by its end. "
            "Deliveries by outcome: "
            + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(handled.items()))
            + ".",
            "",
            "| repositories | job → /metrics median s | p90 s | p99 s | max s | goal p99 ≤ 2 s |",
            "|---|---|---|---|---|---|",
            f"| {args.repositories} | {statistics.median(measured):.2f} | {percentile(measured, 0.9):.2f} | "
            f"{percentile(measured, 0.99):.2f} | {measured[-1]:.2f} | "
            f"{'met' if percentile(measured, 0.99) <= 2 else 'missed'} |",
            "",
            f"Answer to each delivery ({len(answers)}): median {statistics.median(answers) * 1000:.1f} ms, "
            f"p99 {percentile(answers, 0.99) * 1000:.1f} ms, max {answers[-1] * 1000:.1f} ms (goal: 2xx within 1 s).",
            "",
            f"API requests during the {args.seconds:g} s: {requests} — the jobs of each completed run attempt "
            "(one request, at its workflow_run `completed`); no list polling. Idle, the cost is the "
            f"reconciler's alone: {args.repositories} list requests per 10 minutes "
            f"({args.repositories * 6:,} per hour, against {hourly_polling:,.0f} per hour polling every 10 s).",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repositories", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    repositories = tuple(f"acme/repo-{i}" for i in range(args.repositories))
    sim = GitHubSimulator("bench", repositories=repositories, token=TOKEN, speed=args.speed).start()
    port, hook_port = 19610, 19611
    exporter = start_exporter(sim.url, args.repositories, port, hook_port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 120)
        baseline = settled(url)
        sender = TimedSender(sim, f"http://127.0.0.1:{hook_port}/webhook", SECRET)
        since = sender.since
        sim.requests.clear()
        sender.start()
        timeline = watch(url, args.seconds)
        real = {"end": time.time(), "sim_end": sim.clock.now(), "speed": args.speed}
        sender.stop()
        requests = len(sim.requests)
        handled = outcomes(url)
        done = completions(sim, since, real["sim_end"] - 2 * args.speed)
    finally:
        exporter.terminate()
        exporter.wait(20)
        sim.stop()
    measured = lags(done, baseline, timeline, real)
    missing = sum(len(v) for v in done.values()) - len(measured)
    text = report(args, measured, sender.answers, requests, missing=missing, handled=handled)
    print(text)
    if args.write_doc:
        update_section("Webhook freshness", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
