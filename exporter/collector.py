"""Stored aggregates as prometheus-client metric families (for the exposition and backfill), plus
the configured targets.

Example exposition:

    # TYPE cicd_pipeline_run_duration_seconds histogram
    cicd_pipeline_run_duration_seconds_bucket{repository="acme/webapp",workflow="CI",branch="main",event="push",result="success",le="600.0"} 3.0
    cicd_pipeline_target_duration_seconds{repository="acme/webapp",workflow="CI",branch="main",bound="upper"} 720.0
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from exporter import metrics as m
from exporter.config import Config
from exporter.store.aggregates import LAYOUTS, HistogramSeries, Series, ValueSeries
from exporter.store.layouts import cumulative


class BucketBounds:
    """Each histogram series' bucket bounds. A target's and its baseline's bounds are buckets of
    the run and critical-path histograms of its own (repository, workflow, branch) only: other
    repositories' series would pay for them in samples without ever being compared to them."""

    def __init__(self, config: Config) -> None:
        self.own: dict[str, tuple[float, ...]] = {
            spec.name: tuple(float(b) for b in spec.buckets) for spec in m.ALL_METRICS
        }
        extra: dict[tuple[str, ...], set[float]] = {}
        for target in config.targets:
            bounds = extra.setdefault((target.repository, target.workflow, target.branch), set())
            bounds.update((target.target.lower, target.target.upper))
            if target.baseline is not None:
                bounds.update((target.baseline.lower, target.baseline.upper))
        # Both histograms with target buckets start with (repository, workflow, branch).
        self.targeted = {
            (spec.name, run): m.with_bounds(spec.buckets, bounds)
            for spec in m.ALL_METRICS
            if spec.target_buckets
            for run, bounds in extra.items()
        }

    def __call__(self, spec: m.MetricSpec, labels: Sequence[str]) -> tuple[float, ...]:
        if spec.target_buckets:
            found = self.targeted.get((spec.name, tuple(labels[:3])))
            if found is not None:
                return found
        return self.own[spec.name]


def histogram_buckets(
    name: str, series: HistogramSeries, bounds: Sequence[float]
) -> list[tuple[str, float]]:
    counts = cumulative(LAYOUTS[name], series.slots, bounds)
    buckets = [(repr(float(b)), float(c)) for b, c in zip(bounds, counts, strict=True)]
    buckets.append(("+Inf", float(series.count)))
    return buckets


def family(spec: m.MetricSpec) -> Metric:
    if spec.type == "histogram":
        return HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
    if spec.type == "summary":
        return SummaryMetricFamily(spec.name, spec.help, labels=spec.labels)
    if spec.type == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


def add_sample(
    target: Metric,
    spec: m.MetricSpec,
    labels: Sequence[str],
    series: Series,
    bounds: Sequence[float],
    *,
    timestamp: float | None = None,
) -> None:
    if isinstance(target, HistogramMetricFamily):
        assert isinstance(series, HistogramSeries)
        buckets = histogram_buckets(spec.name, series, bounds)
        target.add_metric(list(labels), buckets, series.sum, timestamp=timestamp)
    elif isinstance(target, SummaryMetricFamily):
        assert isinstance(series, HistogramSeries)
        target.add_metric(list(labels), series.count, series.sum, timestamp=timestamp)
    else:
        assert isinstance(series, ValueSeries)
        assert isinstance(target, CounterMetricFamily | GaugeMetricFamily)
        target.add_metric(list(labels), series.value, timestamp=timestamp)


def targets(config: Config) -> list[Metric]:
    """The configured targets and baselines as gauges."""
    target = family(m.TARGET)
    baseline = family(m.BASELINE)
    assert isinstance(target, GaugeMetricFamily)
    assert isinstance(baseline, GaugeMetricFamily)
    for t in config.targets:
        for bound in ("lower", "upper"):
            labels = [t.repository, t.workflow, t.branch, bound]
            target.add_metric(labels, getattr(t.target, bound))
            if t.baseline is not None:
                baseline.add_metric(labels, getattr(t.baseline, bound))
    return [target, baseline]
