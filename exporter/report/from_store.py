"""The report's input from the state store: the same totals /metrics shows (histograms with the
same bucket bounds), the configured targets, the stored `needs:` graphs and flaky-test history."""

from __future__ import annotations

import time

from exporter import metrics as m
from exporter.analysis.workflow import WorkflowGraph
from exporter.collector import BucketBounds
from exporter.config import Config
from exporter.report.inputs import Period, ReportInput
from exporter.report.samples import Hist, Samples
from exporter.sources.github.runs import WorkflowGraphs
from exporter.store import Store
from exporter.store.aggregates import LAYOUTS, Aggregates, HistogramSeries
from exporter.store.cases import FlakyCase, read_flaky_cases
from exporter.store.db import StateError
from exporter.store.layouts import cumulative

# The metrics the report reads.
METRICS = (*m.PIPELINE_METRICS, *m.BUILD_METRICS, *m.TEST_METRICS, *m.IMAGE_METRICS)


def samples_of(aggregates: Aggregates, config: Config) -> Samples:
    bucket_bounds = BucketBounds(config)
    samples = Samples()
    for spec in METRICS:
        for values, series in aggregates.series_of(spec.name):
            named = dict(zip(spec.labels, values, strict=True))
            if isinstance(series, HistogramSeries):
                bounds = bucket_bounds(spec, values) if spec.type == "histogram" else ()
                counts = cumulative(LAYOUTS[spec.name], series.slots, bounds)
                hist = Hist(
                    tuple(bounds), tuple(map(float, counts)), float(series.count), series.sum
                )
                samples.add_hist(spec.name, named, hist)
            else:
                samples.add_value(spec.name, named, series.value)
    for target in config.targets:
        for bound in ("lower", "upper"):
            labels = {
                "repository": target.repository,
                "workflow": target.workflow,
                "branch": target.branch,
                "bound": bound,
            }
            samples.add_value(m.TARGET.name, labels, getattr(target.target, bound))
            if target.baseline is not None:
                samples.add_value(m.BASELINE.name, labels, getattr(target.baseline, bound))
    return samples


def graphs_of(store: Store) -> dict[str, list[WorkflowGraph]]:
    """Each repository's current workflow graphs (one per workflow file)."""
    found: dict[str, list[WorkflowGraph]] = {}
    for source in sorted(store.records.sources()):
        if not source.startswith("github:"):
            continue
        record = store.records.get(source, WorkflowGraphs)
        blobs = [entry.blob for entry in record.workflows.values() if entry.blob in record.blobs]
        graphs = [
            WorkflowGraph.from_json(record.blobs[blob])
            for blob in dict.fromkeys(b for b in blobs if b)
        ]
        if graphs:
            found[source.removeprefix("github:")] = graphs
    return found


def store_input(store: Store | None, config: Config) -> ReportInput:
    """From an open store (None: there is no state file yet)."""
    samples, graphs = Samples(), {}
    if store is not None:
        with store.reading() as aggregates:
            samples = samples_of(aggregates, config)
        graphs = graphs_of(store)
    else:
        samples = samples_of(Aggregates(config.limits.max_series_per_metric), config)
    return ReportInput(
        source=f"the state store ({config.state.path})",
        kind="store",
        generated_at=time.time(),
        now=Period(samples),
        graphs=graphs,
        flaky=_flaky_cases(config.state.path) if store is not None else [],
    )


def _flaky_cases(path: str) -> list[FlakyCase]:
    """The flaky-test history, read beside the open store (an in-memory store has none)."""
    try:
        return read_flaky_cases(path)
    except StateError:
        return []
