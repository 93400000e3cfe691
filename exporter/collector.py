"""Scrape-time rendering of the domain metrics from the state store.

Example exposition:

    # TYPE cicd_pipeline_run_duration_seconds histogram
    cicd_pipeline_run_duration_seconds_bucket{repository="acme/webapp",workflow="CI",branch="main",event="push",result="success",le="600.0"} 3.0
    cicd_pipeline_target_duration_seconds{repository="acme/webapp",workflow="CI",branch="main",bound="upper"} 720.0
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter import metrics as m
from exporter.config import Config
from exporter.state import Store


def _le(bound: float) -> str:
    return repr(float(bound))


class StoreCollector(Collector):
    """Renders every stored histogram, counter and latest-value gauge, plus configured targets."""

    def __init__(
        self, store: Store, config: Config, specs: Iterable[m.MetricSpec] = m.ALL_METRICS
    ) -> None:
        self.store = store
        self.config = config
        self.specs = {spec.name: spec for spec in specs}
        bounds: set[float] = set()
        for target in config.targets:
            bounds.update((target.target.lower, target.target.upper))
            if target.baseline is not None:
                bounds.update((target.baseline.lower, target.baseline.upper))
        self.buckets = {
            spec.name: (
                m.with_bounds(spec.buckets, bounds) if spec.target_buckets else tuple(spec.buckets)
            )
            for spec in self.specs.values()
            if spec.type == "histogram"
        }
        self.repositories = {r.name for r in config.github.repositories} if config.github else set()

    def describe(self) -> Iterable[Metric]:
        return []

    def _wanted(self, spec: m.MetricSpec, labels: tuple[str, ...]) -> bool:
        # Series of repositories no longer configured disappear.
        if "repository" in spec.labels:
            return labels[spec.labels.index("repository")] in self.repositories
        return True

    def collect(self) -> Iterator[Metric]:
        yield from self._targets()
        families: dict[str, Metric] = {}

        def family(spec: m.MetricSpec) -> Metric:
            found = families.get(spec.name)
            if found is None:
                if spec.type == "histogram":
                    found = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
                elif spec.type == "counter":
                    found = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
                else:
                    found = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
                families[spec.name] = found
            return found

        with self.store.reading() as (histograms, counters, gauges):
            for (name, labels), hist in histograms.items():
                spec = self.specs.get(name)
                if spec is None or spec.type != "histogram" or not self._wanted(spec, labels):
                    continue
                bounds = self.buckets[name]
                cumulative = hist.cumulative(bounds)
                buckets = [(_le(b), float(c)) for b, c in zip(bounds, cumulative, strict=True)]
                buckets.append(("+Inf", float(hist.count)))
                target = family(spec)
                assert isinstance(target, HistogramMetricFamily)
                target.add_metric(list(labels), buckets, hist.sum)
            for (name, labels), value in counters.items():
                spec = self.specs.get(name)
                if spec is None or spec.type != "counter" or not self._wanted(spec, labels):
                    continue
                counter = family(spec)
                assert isinstance(counter, CounterMetricFamily)
                counter.add_metric(list(labels), value)
            for (name, labels), (value, _at) in gauges.items():
                spec = self.specs.get(name)
                if spec is None or spec.type != "gauge" or not self._wanted(spec, labels):
                    continue
                gauge = family(spec)
                assert isinstance(gauge, GaugeMetricFamily)
                gauge.add_metric(list(labels), value)
        yield from families.values()

    def _targets(self) -> Iterator[Metric]:
        target = GaugeMetricFamily(m.TARGET.name, m.TARGET.help, labels=m.TARGET.labels)
        baseline = GaugeMetricFamily(m.BASELINE.name, m.BASELINE.help, labels=m.BASELINE.labels)
        for t in self.config.targets:
            for bound in ("lower", "upper"):
                target.add_metric(
                    [t.repository, t.workflow, t.branch, bound], getattr(t.target, bound)
                )
                if t.baseline is not None:
                    baseline.add_metric(
                        [t.repository, t.workflow, t.branch, bound], getattr(t.baseline, bound)
                    )
        yield target
        yield baseline
