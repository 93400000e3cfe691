"""`backfill`: history as OpenMetrics with timestamps, so `promtool tsdb create-blocks-from
openmetrics` gives a new installation its dashboards and regression baselines on day one.

The same path as the live exporter: the GitHub sources fetch an attempt's facts, the observation
functions turn them into a unit, an in-memory aggregate applies it (series caps included), and
prometheus-client renders each histogram's state after every attempt at the attempt's completion
time. Resumable: every fetched attempt's observations are appended to `OUTPUT.checkpoint` (JSON
lines) and not fetched again.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.registry import Collector

from exporter.analysis.pipeline import IncompleteError
from exporter.app import App, policy_for
from exporter.collector import BucketBounds, add_sample, family
from exporter.config import Config
from exporter.logging import get_logger
from exporter.observations import Observe, RepositoryPolicy, Task, Unit, attempt_units, junit_unit
from exporter.sources.errors import MalformedResponse, NotFound
from exporter.sources.github.enrichers import JUnitEnricher
from exporter.sources.github.poller import RepositoryPoller
from exporter.sources.github.runs import attempts_to_observe
from exporter.store.aggregates import SPECS, Aggregates, HistogramSeries

log = get_logger(__name__)


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


def _record(key: str, at: float, units: Iterable[Unit]) -> dict[str, Any]:
    """A checkpoint line: the histogram observations of one attempt."""
    observed = [
        [item.spec.name, list(item.labels), item.value]
        for unit in units
        for item in unit.items
        if isinstance(item, Observe)
    ]
    return {"key": key, "at": at, "observations": observed}


def _attempt_units(
    poller: RepositoryPoller, junit: JUnitEnricher | None, run: Any, number: int
) -> tuple[float, list[Unit]] | None:
    try:
        facts = poller.fetcher.facts(run, number)
    except (IncompleteError, NotFound, MalformedResponse):
        return None
    units = list(attempt_units(facts, poller.policy))
    task = next((t for t in units[0].enqueue if t.kind == "junit"), None)
    if junit is not None and task is not None:
        report, artifact_ids = junit.report(task.data)
        units.append(
            junit_unit(task, report if artifact_ids else None, artifact_ids, poller.policy)
        )
    return facts.completed_at, units


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
    memory = config.state.model_copy(update={"path": ":memory:"})
    app = App(config.model_copy(update={"state": memory}), environ=environ)
    progress = progress or Progress(sys.stderr)
    try:
        with checkpoint.open("a", encoding="utf-8") as out:
            for poller in app.pollers:
                _collect_repository(poller, since, done, out, progress)
            progress.end()
    finally:
        app.close()
    return sorted(done.values(), key=lambda r: (r["at"], r["key"]))


def _collect_repository(
    poller: RepositoryPoller,
    since: float,
    done: dict[str, dict[str, Any]],
    out: TextIO,
    progress: Progress,
) -> None:
    runs = [
        r
        for r in poller.lister.list(time.time() - since).runs
        if r.status == "completed" and poller.wanted(r)
    ]
    junit = poller.enrichers.get("junit")
    junit = junit if isinstance(junit, JUnitEnricher) and poller.policy.junit_artifacts else None
    for index, run in enumerate(runs):
        progress.show(index + 1, len(runs), poller.repo.name)
        for number in attempts_to_observe(run):
            key = f"{poller.repo.name}/{run.id}/{number}"
            if key in done:
                continue
            found = _attempt_units(poller, junit, run, number)
            if found is None:
                continue
            record = _record(key, found[0], found[1])
            out.write(json.dumps(record) + "\n")
            out.flush()
            done[key] = record


@dataclass
class _History:
    """Each histogram series' state after every attempt that changed it, in time order."""

    points: dict[tuple[str, tuple[str, ...]], list[tuple[float, HistogramSeries]]] = field(
        default_factory=dict
    )


def _replay(records: list[dict[str, Any]], config: Config) -> _History:
    aggregates = Aggregates(config.limits.max_series_per_metric)
    policies = _policies(config)
    history = _History()
    for record in records:
        repository = record["key"].rsplit("/", 2)[0]
        policy = policies.get(repository)
        items = tuple(
            Observe(SPECS[name], tuple(labels), value)
            for name, labels, value in record["observations"]
        )
        unit = Unit(source="backfill", items=items, limits=policy.limits if policy else {})
        plan = aggregates.plan(unit, record["at"])
        aggregates.apply(plan)
        for key, series in plan.changed.items():
            if isinstance(series, HistogramSeries):
                history.points.setdefault(key, []).append((record["at"], replace(series)))
    return history


def _policies(config: Config) -> dict[str, RepositoryPolicy]:
    repos = config.github.repositories if config.github else []
    return {repo.name: policy_for(config, repo) for repo in repos}


class _HistoryCollector(Collector):
    """Each series' states as the live exporter renders them (histograms with buckets, summaries
    as sum and count), with the attempt's completion as the timestamp."""

    def __init__(self, history: _History, config: Config) -> None:
        self.history = history
        self.bounds = BucketBounds(config)

    def collect(self) -> Iterator[Metric]:
        for name, spec in SPECS.items():
            series = sorted(
                (labels, points)
                for (metric, labels), points in self.history.points.items()
                if metric == name
            )
            if not series:
                continue
            found = family(spec)
            for labels, points in series:
                bounds = self.bounds(spec, labels)
                for at, state in points:
                    add_sample(found, spec, labels, state, bounds, timestamp=at)
            yield found


def render_openmetrics(records: list[dict[str, Any]], config: Config) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_HistoryCollector(_replay(records, config), config))
    rendered: bytes = generate_latest(registry)  # type: ignore[no-untyped-call]
    return rendered


def backfill(
    config: Config, since: float, output: Path, environ: dict[str, str] | None = None
) -> int:
    checkpoint = output.with_name(output.name + ".checkpoint")
    records = collect(config, since, checkpoint, environ)
    output.write_bytes(render_openmetrics(records, config))
    log.info(
        "backfill written", output=str(output), attempts=len(records), checkpoint=str(checkpoint)
    )
    return len(records)


__all__ = ["Task", "backfill", "collect", "render_openmetrics"]
