"""/metrics scrape time and size at 10k and 100k series, against prometheus-client's own
`generate_latest` on an equivalent registry of plain metrics (the floor for this language).

    python -m bench.scrape [--write-doc]
"""

from __future__ import annotations

import argparse
import sys
import time

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bench.report import machine, update_section
from exporter import metrics as m
from exporter.collector import StoreCollector
from exporter.config import validate_config
from exporter.observations import Observe, Unit
from exporter.store import Store

BUCKETS = m.STEP_DURATION.buckets
PER_SERIES = len(BUCKETS) + 3  # buckets, +Inf, _sum, _count


def labels_for(count: int) -> list[tuple[str, ...]]:
    return [
        (f"acme/repo-{i // 400}", "CI", f"job-{i // 40 % 10}", f"step {i % 40}", "success")
        for i in range(count)
    ]


def ours(label_sets: list[tuple[str, ...]]) -> tuple[CollectorRegistry, Store]:
    store = Store(":memory:", max_series_per_metric=10_000_000)
    repos = sorted({labels[0] for labels in label_sets})
    items = tuple(
        Observe(m.STEP_DURATION, labels, float(index % 97))
        for index, labels in enumerate(label_sets)
    )
    store.commit(Unit("bench", items=items))
    config = validate_config({"github": {"repositories": [{"name": r} for r in repos]}})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, config))
    return registry, store


def plain(label_sets: list[tuple[str, ...]]) -> CollectorRegistry:
    registry = CollectorRegistry()
    histogram = Histogram(
        m.STEP_DURATION.name,
        m.STEP_DURATION.help,
        m.STEP_DURATION.labels,
        buckets=BUCKETS,
        registry=registry,
    )
    for index, labels in enumerate(label_sets):
        histogram.labels(*labels).observe(float(index % 97))
    return registry


def best(registry: CollectorRegistry) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(3):
        started = time.perf_counter()
        size = len(generate_latest(registry))
        times.append(time.perf_counter() - started)
    return min(times), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    table = [
        "| series (samples) | exporter scrape s | size MiB | prometheus-client floor s | exporter ÷ floor |",
        "|---|---|---|---|---|",
    ]
    for samples in (10_000, 100_000):
        label_sets = labels_for(samples // PER_SERIES)
        registry, _store = ours(label_sets)
        ours_s, size = best(registry)
        floor_s, _ = best(plain(label_sets))
        table.append(
            f"| {samples:,} | {ours_s:.3f} | {size / (1 << 20):.1f} | {floor_s:.3f} | {ours_s / floor_s:.2f} |"
        )
    text = "\n".join(
        [
            "Command: `python -m bench.scrape --write-doc` (best of 3 scrapes).",
            f"Machine: {machine()}. Histogram series of `cicd_pipeline_task_step_duration_seconds`, "
            f"{PER_SERIES} samples each, rendered from the state store at scrape time; the floor is the same",
            "label sets in a plain prometheus-client Histogram.",
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
