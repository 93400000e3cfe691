"""The metric aggregates: histograms as bounded slot counts, counters, latest-value gauges.

A unit's items are first planned against the current series (folding decided here, at commit, so
a unit that is not applied changes nothing, not even the fold counters), then persisted, then
swapped in.
"""

from __future__ import annotations

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
from exporter.store.layouts import Layout, layout_for

SPECS = {spec.name: spec for spec in m.ALL_METRICS}
LAYOUTS = {spec.name: layout_for(spec) for spec in m.ALL_METRICS if spec.type == "histogram"}


@dataclass
class HistogramSeries:
    slots: dict[int, int] = field(default_factory=dict)
    sum: float = 0.0
    count: int = 0
    updated: float = 0.0


@dataclass
class ValueSeries:
    """A counter or a gauge; `at` orders latest-value gauges (the moment the value describes)."""

    value: float = 0.0
    at: float = 0.0
    updated: float = 0.0


Series = HistogramSeries | ValueSeries
SeriesKey = tuple[str, Labels]


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

    @property
    def metrics(self) -> set[str]:
        return {metric for metric, _ in self.changed} | {metric for metric, _ in self.deleted}


class Aggregates:
    """In-memory series per metric; the store persists what a plan changes."""

    def __init__(self, max_series_per_metric: int) -> None:
        self.max_series = max_series_per_metric
        self.series: dict[str, dict[Labels, Series]] = {name: {} for name in SPECS}
        # Incremented on every change of a metric: the collector re-renders only what changed.
        self.versions: dict[str, int] = dict.fromkeys(SPECS, 0)
        self._scoped: dict[tuple[str, Labels], set[Labels]] = {}

    # -- loading ------------------------------------------------------------------------------------
    def load(
        self, rows: Iterable[tuple[str, str, float, float, int, str | None, float, float]]
    ) -> None:
        for metric, labels_json, value, total, count, slots, at, updated in rows:
            spec = SPECS.get(metric)
            if spec is None:
                continue  # a metric this version no longer has
            labels = tuple(json.loads(labels_json))
            if spec.type == "histogram":
                parsed = {int(k): int(v) for k, v in json.loads(slots or "{}").items()}
                self.series[metric][labels] = HistogramSeries(parsed, total, count, updated)
            else:
                self.series[metric][labels] = ValueSeries(value, at, updated)
        self._rebuild_scoped()

    def _rebuild_scoped(self) -> None:
        self._scoped = {}
        for name, spec in SPECS.items():
            if spec.cap is None:
                continue
            for labels in self.series[name]:
                scope, values = _cap_parts(spec, labels)
                self._scoped.setdefault((spec.cap.name, scope), set()).add(values)

    # -- planning -----------------------------------------------------------------------------------
    def plan(self, unit: Unit, now: float) -> Plan:
        plan = Plan()
        for item in unit.items:
            self._plan_item(plan, item, unit.limits, now)
        for metric, count in plan.dropped.items():
            key = (m.SERIES_DROPPED.name, (metric,))
            counter = self._current(plan, key)
            assert isinstance(counter, ValueSeries)
            plan.changed[key] = replace(counter, value=counter.value + count, updated=now)
        return plan

    def _plan_item(self, plan: Plan, item: Item, limits: Mapping[str, int], now: float) -> None:
        if isinstance(item, ReplaceGroup):
            self._plan_group(plan, item, limits, now)
            return
        key = (item.spec.name, self._fold(plan, item.spec, item.labels, limits))
        current = self._current(plan, key)
        if isinstance(item, Observe):
            assert isinstance(current, HistogramSeries)
            value = quantize(item.value)
            slots = dict(current.slots)
            slot = LAYOUTS[item.spec.name].slot(value)
            slots[slot] = slots.get(slot, 0) + 1
            plan.changed[key] = HistogramSeries(slots, current.sum + value, current.count + 1, now)
        elif isinstance(item, Increment):
            assert isinstance(current, ValueSeries)
            plan.changed[key] = replace(current, value=current.value + item.amount, updated=now)
        elif isinstance(item, Latest):
            assert isinstance(current, ValueSeries)
            if not self._exists(plan, key) or item.at >= current.at:
                plan.changed[key] = ValueSeries(float(item.value), item.at, now)

    def _plan_group(
        self, plan: Plan, item: ReplaceGroup, limits: Mapping[str, int], now: float
    ) -> None:
        name, prefix = item.spec.name, item.prefix
        members = [
            labels for labels in self._members(plan, name) if labels[: len(prefix)] == prefix
        ]
        if item.at is not None and members:
            newest = max(self._value(plan, (name, labels)).at for labels in members)
            if item.at < newest:
                return
        at = now if item.at is None else item.at
        for labels in members:
            plan.changed.pop((name, labels), None)
            plan.deleted.add((name, labels))
        for rest, value in item.entries:
            labels = self._fold(plan, item.spec, prefix + rest, limits)
            plan.deleted.discard((name, labels))
            plan.changed[(name, labels)] = ValueSeries(float(value), at, now)

    def _value(self, plan: Plan, key: SeriesKey) -> ValueSeries:
        found = self._current(plan, key)
        assert isinstance(found, ValueSeries)
        return found

    def _exists(self, plan: Plan, key: SeriesKey) -> bool:
        if key in plan.changed:
            return True
        return key not in plan.deleted and key[1] in self.series[key[0]]

    def _members(self, plan: Plan, metric: str) -> set[Labels]:
        known = set(self.series[metric])
        known |= {labels for name, labels in plan.changed if name == metric}
        return known - {labels for name, labels in plan.deleted if name == metric}

    def _count(self, plan: Plan, metric: str) -> int:
        stored = self.series[metric]
        added = sum(1 for name, labels in plan.changed if name == metric and labels not in stored)
        gone = sum(1 for name, labels in plan.deleted if name == metric and labels in stored)
        return len(stored) + added - gone

    def _current(self, plan: Plan, key: SeriesKey) -> Series:
        if key in plan.changed:
            return plan.changed[key]
        if key not in plan.deleted and key[1] in self.series[key[0]]:
            return self.series[key[0]][key[1]]
        return HistogramSeries() if SPECS[key[0]].type == "histogram" else ValueSeries()

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
        seen = self._scoped.get(key, set()) | plan.scoped.get(key, set())
        if values in seen:
            return labels
        if len(seen) < limit:
            plan.scoped.setdefault(key, set()).add(values)
            return labels
        plan.dropped[spec.name] = plan.dropped.get(spec.name, 0) + 1
        return _with(spec, labels, spec.cap.labels, OTHER)

    # -- applying -------------------------------------------------------------------------------------
    def apply(self, plan: Plan) -> None:
        """After the plan is persisted."""
        for metric, labels in plan.deleted:
            self.series[metric].pop(labels, None)
        for (metric, labels), series in plan.changed.items():
            self.series[metric][labels] = series
        for key, values in plan.scoped.items():
            self._scoped.setdefault(key, set()).update(values)
        for metric in plan.metrics:
            self.versions[metric] += 1

    def remove(self, keys: Iterable[SeriesKey]) -> dict[str, int]:
        """Drop series (expired, or of repositories no longer configured); returns counts per metric."""
        removed: dict[str, int] = {}
        for metric, labels in keys:
            if self.series[metric].pop(labels, None) is not None:
                removed[metric] = removed.get(metric, 0) + 1
                self.versions[metric] += 1
        if removed:
            self._rebuild_scoped()
        return removed

    def items(self) -> Iterator[tuple[str, Labels, Series]]:
        for metric, series in self.series.items():
            for labels, value in series.items():
                yield metric, labels, value


def _cap_parts(spec: m.MetricSpec, labels: Labels) -> tuple[Labels, Labels]:
    assert spec.cap is not None
    index = {name: i for i, name in enumerate(spec.labels)}
    return (
        tuple(labels[index[name]] for name in spec.cap.scope),
        tuple(labels[index[name]] for name in spec.cap.labels),
    )


def _with(spec: m.MetricSpec, labels: Labels, names: tuple[str, ...], value: str) -> Labels:
    return tuple(
        value if name in names else current
        for name, current in zip(spec.labels, labels, strict=True)
    )


def series_row(metric: str, labels: Labels, series: Series) -> tuple[object, ...]:
    labels_json = json.dumps(list(labels), separators=(",", ":"))
    if isinstance(series, HistogramSeries):
        slots = json.dumps(series.slots, separators=(",", ":"))
        return (metric, labels_json, 0.0, series.sum, series.count, slots, 0.0, series.updated)
    return (metric, labels_json, series.value, 0.0, 0, None, series.at, series.updated)


def labels_json(labels: Labels) -> str:
    return json.dumps(list(labels), separators=(",", ":"))


__all__ = ["Aggregates", "HistogramSeries", "Layout", "Plan", "Series", "ValueSeries"]
