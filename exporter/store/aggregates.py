"""The metric aggregates: histograms and summaries as bounded slot counts, counters, latest-value
gauges — each metric's series partitioned by their first label (the repository, the registry, …),
with a version per partition so the exposition re-renders only what changed.

A unit's items are first planned against the current series (folding decided here, at commit, so
a unit that is not applied changes nothing, not even the fold counters), then persisted, then
swapped in.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from exporter import metrics as m
from exporter.observations import (
    OTHER,
    Increment,
    Item,
    Labels,
    Latest,
    Observe,
    ReplaceGroup,
    Unit,
)
from exporter.store.layouts import EMPTY, Layout, Slots, layout_for

SPECS = {spec.name: spec for spec in m.ALL_METRICS}
DISTRIBUTIONS = ("histogram", "summary")
LAYOUTS = {spec.name: layout_for(spec) for spec in m.ALL_METRICS if spec.type in DISTRIBUTIONS}
# Partition versions, unique in the process: an Aggregates rebuilt from the file (after a failed
# write) never repeats a version the exposition has cached for other contents.
_VERSIONS = itertools.count(1)


@dataclass(slots=True)
class HistogramSeries:
    """A histogram's counts per layout slot, with sum and count (a summary: no slots)."""

    slots: Slots = field(default_factory=lambda: EMPTY)
    sum: float = 0.0
    count: int = 0
    updated: float = 0.0


@dataclass(slots=True)
class ValueSeries:
    """A counter or a gauge; `at` orders latest-value gauges (the moment the value describes)."""

    value: float = 0.0
    at: float = 0.0
    updated: float = 0.0


Series = HistogramSeries | ValueSeries
SeriesKey = tuple[str, Labels]
Partition = dict[Labels, Series]


def partition_of(labels: Labels) -> str:
    return labels[0] if labels else ""


def quantize(value: float) -> float:
    """Observed values: non-negative, 1 ms resolution (sums stay exact to the millisecond)."""
    if not math.isfinite(value):
        raise ValueError(f"observed value {value} is not finite")
    return round(max(0.0, float(value)), 3)


@dataclass
class Plan:
    """What one unit changes: new states of touched series, deleted series, new scoped values."""

    changed: dict[SeriesKey, Series] = field(default_factory=dict)
    deleted: set[SeriesKey] = field(default_factory=set)
    scoped: dict[tuple[str, Labels], set[Labels]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    # Series each metric gains (or loses) with the plan: the cap check costs O(1) per item.
    delta: dict[str, int] = field(default_factory=dict)

    @property
    def partitions(self) -> set[tuple[str, str]]:
        return {(metric, partition_of(labels)) for metric, labels in [*self.changed, *self.deleted]}


class Aggregates:
    """In-memory series; the store persists what a plan changes."""

    def __init__(self, max_series_per_metric: int) -> None:
        self.max_series = max_series_per_metric
        self._series: dict[str, dict[str, Partition]] = {name: {} for name in SPECS}
        self._counts: dict[str, int] = dict.fromkeys(SPECS, 0)
        # (metric, partition) → incremented on every change: the exposition's cache key.
        self.versions: dict[tuple[str, str], int] = {}
        self._scoped: dict[tuple[str, Labels], set[Labels]] = {}

    # -- reading ------------------------------------------------------------------------------------
    def get(self, metric: str, labels: Labels) -> Series | None:
        return self._series[metric].get(partition_of(labels), {}).get(labels)

    def partitions(self, metric: str) -> Mapping[str, Partition]:
        return self._series[metric]

    def series_of(self, metric: str) -> Iterator[tuple[Labels, Series]]:
        for partition in self._series[metric].values():
            yield from partition.items()

    def count(self, metric: str) -> int:
        return self._counts[metric]

    def items(self) -> Iterator[tuple[str, Labels, Series]]:
        for metric in self._series:
            for labels, series in self.series_of(metric):
                yield metric, labels, series

    # -- loading ------------------------------------------------------------------------------------
    def load(
        self, rows: Iterable[tuple[str, str, float, float, int, str | None, float, float]]
    ) -> None:
        for metric, labels_json_, value, total, count, slots, at, updated in rows:
            spec = SPECS.get(metric)
            if spec is None:
                continue  # a metric this version no longer has
            labels = tuple(json.loads(labels_json_))
            if len(labels) != len(spec.labels):
                continue  # the metric's labels changed with this version: that series restarts
            if spec.type == "histogram":
                parsed = Slots({int(k): int(v) for k, v in json.loads(slots or "{}").items()})
                self._put(metric, labels, HistogramSeries(parsed, total, count, updated))
            elif spec.type == "summary":
                self._put(metric, labels, HistogramSeries(EMPTY, total, count, updated))
            else:
                self._put(metric, labels, ValueSeries(value, at, updated))
        self._rebuild_scoped()
        self._bump((name, key) for name, partitions in self._series.items() for key in partitions)

    def _put(self, metric: str, labels: Labels, series: Series) -> None:
        partition = self._series[metric].setdefault(partition_of(labels), {})
        if labels not in partition:
            self._counts[metric] += 1
        partition[labels] = series

    def _pop(self, metric: str, labels: Labels) -> Series | None:
        key = partition_of(labels)
        partition = self._series[metric].get(key)
        if partition is None or labels not in partition:
            return None
        self._counts[metric] -= 1
        series = partition.pop(labels)
        if not partition:
            del self._series[metric][key]
        return series

    def _rebuild_scoped(self) -> None:
        self._scoped = {}
        for name, spec in SPECS.items():
            if spec.cap is None:
                continue
            for labels, _ in self.series_of(name):
                scope, values = _cap_parts(spec, labels)
                if not _folded(values):  # the fold itself holds no slot of the cap
                    self._scoped.setdefault((spec.cap.name, scope), set()).add(values)

    # -- planning -----------------------------------------------------------------------------------
    def plan(self, unit: Unit, now: float) -> Plan:
        plan = Plan()
        for item in unit.items:
            self._plan_item(plan, item, unit.limits, now)
        for metric, count in plan.dropped.items():
            key = (m.SERIES_DROPPED.name, (metric,))
            counter = self._value(plan, key)
            self._set(plan, key, replace(counter, value=counter.value + count, updated=now))
        return plan

    def _plan_item(self, plan: Plan, item: Item, limits: Mapping[str, int], now: float) -> None:
        if isinstance(item, ReplaceGroup):
            self._plan_group(plan, item, limits, now)
            return
        key = (item.spec.name, self._fold(plan, item.spec, item.labels, limits))
        current = self._current(plan, key)
        if isinstance(item, Observe):
            assert isinstance(current, HistogramSeries)
            self._observe(plan, key, current, quantize(item.value), now)
        elif isinstance(item, Increment):
            assert isinstance(current, ValueSeries)
            self._set(plan, key, replace(current, value=current.value + item.amount, updated=now))
        elif isinstance(item, Latest):
            assert isinstance(current, ValueSeries)
            if not self._exists(plan, key) or item.at >= current.at:
                self._set(plan, key, ValueSeries(float(item.value), item.at, now))

    def _observe(
        self, plan: Plan, key: SeriesKey, current: HistogramSeries, value: float, now: float
    ) -> None:
        """The plan's own copy of the series is changed in place; a stored one is copied first
        (the plan must not change what readers see before it is applied)."""
        summary = SPECS[key[0]].type == "summary"
        if key in plan.changed:
            if not summary:
                current.slots.add(LAYOUTS[key[0]].slot(value))
            current.sum += value
            current.count += 1
            current.updated = now
            return
        slots = current.slots if summary else current.slots.added(LAYOUTS[key[0]].slot(value))
        self._set(plan, key, HistogramSeries(slots, current.sum + value, current.count + 1, now))

    def _plan_group(
        self, plan: Plan, item: ReplaceGroup, limits: Mapping[str, int], now: float
    ) -> None:
        name, prefix = item.spec.name, item.prefix
        members = [labels for labels in self._members(plan, name, prefix)]
        if item.at is not None and members:
            newest = max(self._value(plan, (name, labels)).at for labels in members)
            if item.at < newest:
                return
        at = now if item.at is None else item.at
        for labels in members:
            self._delete(plan, (name, labels))
        values: dict[Labels, float] = {}
        for rest, value in item.entries:
            labels = self._fold(plan, item.spec, prefix + rest, limits)
            values[labels] = _combine(item.combine, values.get(labels), float(value))
        for labels, value in values.items():
            self._set(plan, (name, labels), ValueSeries(value, at, now))

    def _set(self, plan: Plan, key: SeriesKey, series: Series) -> None:
        if not self._exists(plan, key):
            plan.delta[key[0]] = plan.delta.get(key[0], 0) + 1
        plan.deleted.discard(key)
        plan.changed[key] = series

    def _delete(self, plan: Plan, key: SeriesKey) -> None:
        if self._exists(plan, key):
            plan.delta[key[0]] = plan.delta.get(key[0], 0) - 1
        plan.changed.pop(key, None)
        if self.get(*key) is not None:
            plan.deleted.add(key)

    def _value(self, plan: Plan, key: SeriesKey) -> ValueSeries:
        found = self._current(plan, key)
        assert isinstance(found, ValueSeries)
        return found

    def _exists(self, plan: Plan, key: SeriesKey) -> bool:
        if key in plan.changed:
            return True
        return key not in plan.deleted and self.get(*key) is not None

    def _members(self, plan: Plan, metric: str, prefix: Labels) -> set[Labels]:
        """Label sets under `prefix`, as the plan leaves them (the prefix holds the partition)."""
        stored = (
            self._series[metric].get(partition_of(prefix), {})
            if prefix
            else dict(self.series_of(metric))
        )
        known = {labels for labels in stored if labels[: len(prefix)] == prefix}
        known |= {
            labels
            for name, labels in plan.changed
            if name == metric and labels[: len(prefix)] == prefix
        }
        return known - {labels for name, labels in plan.deleted if name == metric}

    def _count(self, plan: Plan, metric: str) -> int:
        return self._counts[metric] + plan.delta.get(metric, 0)

    def _current(self, plan: Plan, key: SeriesKey) -> Series:
        if key in plan.changed:
            return plan.changed[key]
        found = None if key in plan.deleted else self.get(*key)
        if found is not None:
            return found
        return HistogramSeries() if SPECS[key[0]].type in DISTRIBUTIONS else ValueSeries()

    # -- cardinality ----------------------------------------------------------------------------------
    def _fold(
        self, plan: Plan, spec: m.MetricSpec, labels: Labels, limits: Mapping[str, int]
    ) -> Labels:
        if len(labels) != len(spec.labels):
            raise ValueError(f"{spec.name}: expected labels {spec.labels}, got {labels}")
        if spec.cap is not None and spec.cap.name in limits:
            labels = self._fold_scoped(plan, spec, labels, limits[spec.cap.name])
        if (
            not spec.foldable
            or self._exists(plan, (spec.name, labels))
            or self._count(plan, spec.name) < self.max_series
        ):
            return labels
        plan.dropped[spec.name] = plan.dropped.get(spec.name, 0) + 1
        return _with(spec, labels, spec.foldable, OTHER)

    def _fold_scoped(self, plan: Plan, spec: m.MetricSpec, labels: Labels, limit: int) -> Labels:
        assert spec.cap is not None
        scope, values = _cap_parts(spec, labels)
        key = (spec.cap.name, scope)
        stored, planned = self._scoped.get(key, set()), plan.scoped.get(key, set())
        if values in stored or values in planned or _folded(values):
            return labels
        if len(stored) + len(planned) < limit:  # disjoint: a plan adds only values not stored
            plan.scoped.setdefault(key, set()).add(values)
            return labels
        plan.dropped[spec.name] = plan.dropped.get(spec.name, 0) + 1
        return _with(spec, labels, spec.cap.labels, OTHER)

    # -- applying -------------------------------------------------------------------------------------
    def apply(self, plan: Plan) -> None:
        """After the plan is persisted."""
        for metric, labels in plan.deleted:
            self._pop(metric, labels)
        for (metric, labels), series in plan.changed.items():
            self._put(metric, labels, series)
        for key, values in plan.scoped.items():
            self._scoped.setdefault(key, set()).update(values)
        self._bump(plan.partitions)

    def remove(self, keys: Iterable[SeriesKey]) -> dict[str, int]:
        """Drop series (expired, or of sources no longer configured); returns counts per metric."""
        removed: dict[str, int] = {}
        touched: set[tuple[str, str]] = set()
        for metric, labels in keys:
            if self._pop(metric, labels) is not None:
                removed[metric] = removed.get(metric, 0) + 1
                touched.add((metric, partition_of(labels)))
        if removed:
            self._rebuild_scoped()
            self._bump(touched)
        return removed

    def stale(self, before: float) -> list[SeriesKey]:
        """Series not updated since `before`."""
        return [(metric, labels) for metric, labels, s in self.items() if s.updated < before]

    def _bump(self, partitions: Iterable[tuple[str, str]]) -> None:
        for key in partitions:
            self.versions[key] = next(_VERSIONS)


def _cap_parts(spec: m.MetricSpec, labels: Labels) -> tuple[Labels, Labels]:
    assert spec.cap is not None
    index = {name: i for i, name in enumerate(spec.labels)}
    return (
        tuple(labels[index[name]] for name in spec.cap.scope),
        tuple(labels[index[name]] for name in spec.cap.labels),
    )


def _combine(rule: str, current: float | None, value: float) -> float:
    """Two entries of a replaced group that folded onto one series."""
    if current is None:
        return value
    return min(current, value) if rule == "min" else current + value


def _folded(values: Labels) -> bool:
    return all(value == OTHER for value in values)


def _with(spec: m.MetricSpec, labels: Labels, names: tuple[str, ...], value: str) -> Labels:
    return tuple(
        value if name in names else current
        for name, current in zip(spec.labels, labels, strict=True)
    )


def series_row(metric: str, labels: Labels, series: Series) -> tuple[object, ...]:
    labels_text = labels_json(labels)
    if isinstance(series, HistogramSeries):
        slots = json.dumps(dict(series.slots.items()), separators=(",", ":"))
        return (metric, labels_text, 0.0, series.sum, series.count, slots, 0.0, series.updated)
    return (metric, labels_text, series.value, 0.0, 0, None, series.at, series.updated)


def labels_json(labels: Labels) -> str:
    return json.dumps(list(labels), separators=(",", ":"))


__all__ = ["Aggregates", "HistogramSeries", "Layout", "Plan", "Series", "ValueSeries"]
