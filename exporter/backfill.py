"""`backfill`: history as OpenMetrics with timestamps, so `promtool tsdb create-blocks-from
openmetrics` gives a new installation its dashboards and regression baselines on day one.

Reads the same GitHub API (rate-limit aware, through the exporter's client), computes the same
facts as the poller, and writes cumulative histograms (run, critical path, job, queue, step, test
suite) at each run's completion time. Resumable: every fetched attempt is appended to
`OUTPUT.checkpoint` (JSON lines) and not fetched again."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from exporter import metrics as m
from exporter.analysis.junit import Report
from exporter.analysis.pipeline import IncompleteError, RunFacts, run_facts
from exporter.app import App
from exporter.config import Config
from exporter.logging import get_logger
from exporter.sources.errors import NotFound
from exporter.sources.github.junit import JUnitArtifacts
from exporter.sources.github.poller import PollResult, RepositoryPoller

log = get_logger(__name__)

Observation = tuple[str, tuple[str, ...], float]  # metric, label values, value


@dataclass
class Series:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.bounds)
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1
        self.total += value
        self.count += 1


def observations(
    poller: RepositoryPoller, facts: RunFacts, report: Report | None
) -> list[Observation]:
    """The histogram observations the poller records for one attempt (same labels)."""
    repo, workflow = poller.repo.name, facts.workflow
    branch = poller.branch_label(facts.branch)
    out: list[Observation] = [
        (m.RUN_DURATION.name, (repo, workflow, branch, facts.event, facts.result), facts.seconds)
    ]
    if facts.critical_path:
        out.append(
            (
                m.RUN_CRITICAL_PATH.name,
                (repo, workflow, branch, facts.result),
                facts.critical_path_seconds,
            )
        )
    for job in facts.jobs:
        out.append(
            (
                m.JOB_DURATION.name,
                (repo, workflow, branch, job.name, job.result, job.runner),
                job.seconds,
            )
        )
        if job.queue_seconds is not None:
            out.append(
                (
                    m.JOB_QUEUE.name,
                    (repo, workflow, branch, job.name, job.runner),
                    job.queue_seconds,
                )
            )
        for step in job.steps:
            out.append(
                (
                    m.STEP_DURATION.name,
                    (repo, workflow, job.name, step.name, step.result),
                    step.seconds,
                )
            )
    if report is not None:
        for suite, totals in report.suites.items():
            out.append((m.TEST_SUITE_DURATION.name, (repo, workflow, suite), totals.seconds))
    return out


class Progress:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def show(self, done: int, total: int, label: str) -> None:
        if self.tty:
            width = 30
            filled = int(width * done / max(1, total))
            self.stream.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
            self.stream.flush()

    def end(self) -> None:
        if self.tty:
            self.stream.write("\n")


def collect(
    config: Config,
    since: float,
    checkpoint: Path,
    environ: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Every completed attempt created in the period, as checkpoint records (fetched or resumed)."""
    done: dict[str, dict[str, Any]] = {}
    if checkpoint.exists():
        for line in checkpoint.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                done[record["key"]] = record
    app = App(
        config.model_copy(update={"state": config.state.model_copy(update={"path": ":memory:"})}),
        environ=environ,
    )
    progress = progress or Progress(sys.stderr)
    try:
        with checkpoint.open("a", encoding="utf-8") as out:
            for poller in app.pollers:
                runs = [
                    r
                    for r in poller._list(time.time() - since, None, PollResult())
                    if isinstance(r.get("id"), int)
                    and r.get("status") == "completed"
                    and (poller.repo.workflows is None or r.get("name") in poller.repo.workflows)
                ]
                junit = next((e for e in poller.enrichers if isinstance(e, JUnitArtifacts)), None)
                for index, run in enumerate(runs):
                    progress.show(index + 1, len(runs), poller.repo.name)
                    for attempt in range(1, int(run.get("run_attempt") or 1) + 1):
                        key = f"{poller.repo.name}/{run['id']}/{attempt}"
                        if key in done:
                            continue
                        try:
                            attempt_run = (
                                run
                                if attempt == run.get("run_attempt")
                                else poller.client.get_json(
                                    f"/repos/{poller.repo.name}/actions/runs/{run['id']}/attempts/{attempt}"
                                )
                            )
                            jobs = poller._jobs(int(run["id"]), attempt)
                            facts = run_facts(
                                poller.repo.name,
                                attempt_run,
                                jobs,
                                poller._graph(attempt_run, jobs),
                            )
                        except (IncompleteError, NotFound):
                            continue
                        report = junit.report(facts) if junit is not None else None
                        record = {
                            "key": key,
                            "at": facts.completed_at,
                            "observations": observations(poller, facts, report),
                        }
                        out.write(json.dumps(record) + "\n")
                        out.flush()
                        done[key] = record
            progress.end()
    finally:
        app.close()
    return sorted(done.values(), key=lambda r: (r["at"], r["key"]))


def render_openmetrics(records: list[dict[str, Any]], config: Config) -> Iterator[str]:
    """Families one after another; in each, every series' points in time order."""
    extra: set[float] = set()
    for target in config.targets:
        extra |= {target.target.lower, target.target.upper}
        if target.baseline is not None:
            extra |= {target.baseline.lower, target.baseline.upper}
    specs = {
        s.name: s
        for s in (
            m.RUN_DURATION,
            m.RUN_CRITICAL_PATH,
            m.JOB_DURATION,
            m.JOB_QUEUE,
            m.STEP_DURATION,
            m.TEST_SUITE_DURATION,
        )
    }
    points: dict[str, dict[tuple[str, ...], list[tuple[float, float]]]] = {
        name: {} for name in specs
    }
    for record in records:
        for metric, labels, value in record["observations"]:
            points[metric].setdefault(tuple(labels), []).append((record["at"], float(value)))
    for name, spec in specs.items():
        if not points[name]:
            continue
        bounds = (
            m.with_bounds(spec.buckets, extra)
            if spec.target_buckets
            else tuple(float(b) for b in spec.buckets)
        )
        yield f"# TYPE {name} histogram\n"
        yield f"# HELP {name} {spec.help}\n"
        for labels, observed in sorted(points[name].items()):
            series = Series(bounds)
            pairs = ",".join(
                f'{k}="{_escape(v)}"' for k, v in zip(spec.labels, labels, strict=True)
            )
            for at, value in sorted(observed):
                series.observe(value)
                ts = f"{at:.3f}"
                for bound, count in zip(bounds, series.counts, strict=True):
                    yield f'{name}_bucket{{{pairs},le="{bound:g}"}} {count} {ts}\n'
                yield f'{name}_bucket{{{pairs},le="+Inf"}} {series.count} {ts}\n'
                yield f"{name}_count{{{pairs}}} {series.count} {ts}\n"
                yield f"{name}_sum{{{pairs}}} {series.total:.3f} {ts}\n"
    yield "# EOF\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def backfill(
    config: Config, since: float, output: Path, environ: dict[str, str] | None = None
) -> int:
    checkpoint = output.with_name(output.name + ".checkpoint")
    records = collect(config, since, checkpoint, environ)
    with output.open("w", encoding="utf-8") as out:
        for chunk in render_openmetrics(records, config):
            out.write(chunk)
    log.info(
        "backfill written", output=str(output), attempts=len(records), checkpoint=str(checkpoint)
    )
    return len(records)
