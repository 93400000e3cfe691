"""/metrics: the stored series rendered by prometheus-client once per change of each (metric,
partition) — a partition is the series' first label, usually the repository — and served from
those bytes, so a scrape costs what changed since the last one, not the whole store.

The exporter's own metrics (a small prometheus-client registry) and the configured targets are
rendered on every scrape. Bodies are gzip-compressed when the scraper asks for it.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from exporter import metrics as m
from exporter.collector import BucketBounds, add_sample, family, targets
from exporter.config import Config
from exporter.store import Store
from exporter.store.aggregates import Aggregates, Partition

StartResponse = Callable[..., Any]
EOF = b"# EOF\n"
# Counters exported at 0 for every metric they can count from the start, so that rate() and
# increase() see the first fold or expiry (a series that appears at 1 shows no increase).
_ZERO_SERIES: dict[str, tuple[str, ...]] = {
    m.SERIES_DROPPED.name: tuple(spec.name for spec in m.ALL_METRICS if spec.foldable),
    m.SERIES_EXPIRED.name: tuple(
        spec.name for spec in m.ALL_METRICS if spec not in m.EXPORTER_METRICS
    ),
}


class _Families:
    """What prometheus-client's generators take: an object whose collect() yields families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def _render(families: Iterable[Metric], openmetrics: bool) -> bytes:
    source: Any = _Families(families)
    if openmetrics:
        text: bytes = openmetrics_latest(source)  # type: ignore[no-untyped-call]
        return text.removesuffix(EOF)
    rendered: bytes = text_latest(source)
    return rendered


def _render_registry(registry: CollectorRegistry, openmetrics: bool) -> bytes:
    if openmetrics:
        text: bytes = openmetrics_latest(registry)  # type: ignore[no-untyped-call]
        return text.removesuffix(EOF)
    return text_latest(registry)


def _samples_only(rendered: bytes) -> bytes:
    """The sample lines of a rendered family (its # HELP / # TYPE / # UNIT lines dropped)."""
    return b"".join(
        line for line in rendered.splitlines(keepends=True) if not line.startswith(b"# ")
    )


class Exposition:
    def __init__(self, store: Store, config: Config, registry: CollectorRegistry) -> None:
        self.store = store
        self.config = config
        self.registry = registry
        self.bounds = BucketBounds(config)
        self._lock = threading.Lock()
        self._headers: dict[tuple[bool, str], bytes] = {}
        # (openmetrics, metric, partition) → (version, rendered samples)
        self._cache: dict[tuple[bool, str, str], tuple[int, bytes]] = {}
        self._zero_cache: dict[tuple[bool, str, tuple[str, ...]], bytes] = {}

    def render(self, openmetrics: bool = False) -> bytes:
        return b"".join(self.chunks(openmetrics))

    def chunks(self, openmetrics: bool = False) -> list[bytes]:
        """The exposition as its cached pieces: served as they are, never joined into one large
        copy per scrape (large transient buffers fragment the allocator's per-thread arenas)."""
        with self._lock:
            with self.store.reading() as aggregates:
                parts = self._stored(aggregates, openmetrics)
                parts.append(_render(self._computed(aggregates), openmetrics))
            parts.append(_render(targets(self.config), openmetrics))
            parts.append(_render_registry(self.registry, openmetrics))
            if openmetrics:
                parts.append(EOF)
            return parts

    def _stored(self, aggregates: Aggregates, openmetrics: bool) -> list[bytes]:
        parts: list[bytes] = []
        used: dict[tuple[bool, str, str], tuple[int, bytes]] = {}
        for spec in m.ALL_METRICS:
            partitions = aggregates.partitions(spec.name)
            zeros = [name for name in _ZERO_SERIES.get(spec.name, ()) if name not in partitions]
            if not partitions and not zeros:
                continue
            parts.append(self._header(spec, openmetrics))
            if zeros:
                parts.append(self._zeros(spec, zeros, openmetrics))
            for name in sorted(partitions):
                key = (openmetrics, spec.name, name)
                version = aggregates.versions.get((spec.name, name), 0)
                cached = self._cache.get(key)
                if cached is None or cached[0] != version:
                    samples = self._partition(spec, partitions[name], openmetrics)
                    cached = (version, samples)
                used[key] = cached
                parts.append(cached[1])
        # Formats not asked for this time keep their entries.
        self._cache = {k: v for k, v in self._cache.items() if k[0] != openmetrics} | used
        return parts

    def _header(self, spec: m.MetricSpec, openmetrics: bool) -> bytes:
        key = (openmetrics, spec.name)
        if key not in self._headers:
            self._headers[key] = _render([family(spec)], openmetrics)
        return self._headers[key]

    def _zeros(self, spec: m.MetricSpec, metrics: list[str], openmetrics: bool) -> bytes:
        key = (openmetrics, spec.name, tuple(metrics))
        if key not in self._zero_cache:
            found = family(spec)
            assert isinstance(found, CounterMetricFamily)
            for name in metrics:
                found.add_metric([name], 0.0)
            self._zero_cache[key] = _samples_only(_render([found], openmetrics))
        return self._zero_cache[key]

    def _partition(self, spec: m.MetricSpec, partition: Partition, openmetrics: bool) -> bytes:
        found = family(spec)
        for labels, series in partition.items():
            add_sample(found, spec, labels, series, self.bounds(spec, labels))
        return _samples_only(_render([found], openmetrics))

    def _computed(self, aggregates: Aggregates) -> list[Metric]:
        """Series per metric and the cap: computed at each scrape, never stored."""
        series = family(m.SERIES)
        assert isinstance(series, GaugeMetricFamily)
        for spec in m.ALL_METRICS:
            count = aggregates.count(spec.name)
            if count:
                series.add_metric([spec.name], count)
        limit = family(m.SERIES_LIMIT)
        assert isinstance(limit, GaugeMetricFamily)
        limit.add_metric([], self.store.aggregates.max_series)
        return [series, limit]

    # -- WSGI -----------------------------------------------------------------------------------------
    def wsgi(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """Text or OpenMetrics as the Accept header asks (prometheus-client's negotiation),
        gzip when Accept-Encoding allows it."""
        _, content_type = choose_encoder(str(environ.get("HTTP_ACCEPT") or ""))
        parts = self.chunks(openmetrics=content_type.startswith("application/openmetrics-text"))
        # The body depends on both headers: caches must not serve one client's answer to another.
        headers = [("Content-Type", content_type), ("Vary", "Accept, Accept-Encoding")]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            parts = _gzip(parts)
            headers.append(("Content-Encoding", "gzip"))
        parts = _coalesce(parts)
        headers.append(("Content-Length", str(sum(len(part) for part in parts))))
        start_response("200 OK", headers)
        return parts


def _coalesce(parts: list[bytes], size: int = 64 * 1024) -> list[bytes]:
    """Pieces of about `size` bytes: the server writes each piece separately, and thousands of
    tiny writes cost more than the bytes; small enough to stay clear of large allocations."""
    out: list[bytes] = []
    pending: list[bytes] = []
    length = 0
    for part in parts:
        pending.append(part)
        length += len(part)
        if length >= size:
            out.append(b"".join(pending))
            pending, length = [], 0
    if pending:
        out.append(b"".join(pending))
    return out


def _gzip(parts: list[bytes]) -> list[bytes]:
    """A gzip stream of the parts, piece by piece. Level 1: most of the size win at a fraction
    of the default level's time."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [compressor.compress(part) for part in parts]
    out.append(compressor.flush())
    return [piece for piece in out if piece]
