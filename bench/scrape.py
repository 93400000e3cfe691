"""/metrics scrape time and size at 10k and 100k series, against prometheus-client's own
`generate_latest` on an equivalent registry of plain metrics (the floor for this language).

    python -m bench.scrape [--write-doc]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bench.report import machine, update_section
from exporter import metrics as m
from exporter.config import validate_config
from exporter.exposition import Exposition
from exporter.observations import Observe, Unit
from exporter.store import Store

BUCKETS = m.STEP_DISTRIBUTION.buckets
PER_SERIES = len(BUCKETS) + 3  # buckets, +Inf, _sum, _count


def labels_for(count: int) -> list[tuple[str, ...]]:
    return [
        (f"acme/repo-{i // 400}", "CI", f"job-{i // 40 % 10}", f"step {i % 40}", "success")
        for i in range(count)
    ]


def ours(label_sets: list[tuple[str, ...]]) -> tuple[Exposition, Store]:
    store = Store(":memory:", max_series_per_metric=10_000_000)
    repos = sorted({labels[0] for labels in label_sets})
    items = tuple(
        Observe(m.STEP_DISTRIBUTION, labels, float(index % 97))
        for index, labels in enumerate(label_sets)
    )
    store.commit(Unit("bench", items=items))
    config = validate_config({"github": {"repositories": [{"name": r} for r in repos]}})
    return Exposition(store, config, CollectorRegistry()), store


def plain(label_sets: list[tuple[str, ...]]) -> CollectorRegistry:
    registry = CollectorRegistry()
    histogram = Histogram(
        m.STEP_DISTRIBUTION.name,
        m.STEP_DISTRIBUTION.help,
        m.STEP_DISTRIBUTION.labels,
        buckets=BUCKETS,
        registry=registry,
    )
    for index, labels in enumerate(label_sets):
        histogram.labels(*labels).observe(float(index % 97))
    return registry


def best(render: Callable[[], bytes]) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(3):
        started = time.perf_counter()
        size = len(render())
        times.append(time.perf_counter() - started)
    return min(times), size


def first(render: Callable[[], bytes]) -> float:
    started = time.perf_counter()
    render()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    table = [
        "| series (samples) | exporter, first render s | exporter, unchanged s | size MiB | prometheus-client floor s | first ÷ floor |",
        "|---|---|---|---|---|---|",
    ]
    for samples in (10_000, 100_000):
        label_sets = labels_for(samples // PER_SERIES)
        exposition, _store = ours(label_sets)
        cold = first(exposition.render)
        cached, size = best(exposition.render)
        floor_s, _ = best(partial(generate_latest, plain(label_sets)))
        table.append(
            f"| {samples:,} | {cold:.3f} | {cached:.3f} | {size / (1 << 20):.1f} | {floor_s:.3f} | {cold / floor_s:.2f} |"
        )
    text = "\n".join(
        [
            "Command: `python -m bench.scrape --write-doc` (best of 3 scrapes).",
            f"Machine: {machine()}. Histogram series of `{m.STEP_DISTRIBUTION.name}`, "
            f"{PER_SERIES} samples each, rendered from the state store (first render, then cached per "
            "repository while unchanged); the floor is the same label sets in a plain prometheus-client Histogram.",
            "",
            *table,
        ]
    )
    print(text)
    if args.write_doc:
        update_section("Scrape time and size", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
