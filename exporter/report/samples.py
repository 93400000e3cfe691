"""The report's input: one period's view of the metrics, whichever source it came from.

Histograms and summaries are cumulative bucket counts, sum and count over the period; counters are
their increase over it; gauges their latest value. The state store gives everything it holds (what
/metrics shows); Prometheus gives differences between two moments, so both feed the same sections.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Labels = Mapping[str, str]


@dataclass(frozen=True)
class Hist:
    """A histogram over a period: cumulative counts at each finite bound (ascending), the total
    count (+Inf) and the sum. A summary is a Hist without bounds."""

    bounds: tuple[float, ...] = ()
    counts: tuple[float, ...] = ()
    count: float = 0.0
    sum: float = 0.0

    def __add__(self, other: Hist) -> Hist:
        if not self.count and not self.bounds:
            return other
        if not other.count and not other.bounds:
            return self
        bounds = tuple(sorted(set(self.bounds) | set(other.bounds)))
        counts = tuple(self.at(b) + other.at(b) for b in bounds)
        return Hist(bounds, counts, self.count + other.count, self.sum + other.sum)

    def at(self, bound: float) -> float:
        """Cumulative count at `bound` (bounds not stored count as the next lower one)."""
        found = 0.0
        for b, c in zip(self.bounds, self.counts, strict=True):
            if b > bound:
                break
            found = c
        return found

    def minus(self, earlier: Hist) -> Hist:
        """This cumulative state less an earlier one: what happened in between. A series that
        restarted (its count went down) counts from its restart."""
        if earlier.count > self.count or not earlier.count:
            return self
        counts = tuple(
            max(0.0, c - earlier.at(b)) for b, c in zip(self.bounds, self.counts, strict=True)
        )
        return Hist(
            self.bounds, counts, self.count - earlier.count, max(0.0, self.sum - earlier.sum)
        )

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """Prometheus' histogram_quantile over these buckets (linear within a bucket; the highest
        finite bound when the rank falls in +Inf); None without observations."""
        if not self.count or not self.bounds:
            return None
        rank = q * self.count
        previous_bound, previous_count = 0.0, 0.0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            if count >= rank:
                if bound <= 0:
                    return bound
                inside = count - previous_count
                return previous_bound + (bound - previous_bound) * (rank - previous_count) / inside
            previous_bound, previous_count = bound, count
        return self.bounds[-1]

    def bucket(self, q: float) -> tuple[float, float] | None:
        """The bucket the q-quantile falls in, (lower, upper): what `quantile` interpolates
        inside, so how precise it is (None in +Inf)."""
        if not self.count or not self.bounds:
            return None
        rank = q * self.count
        previous = 0.0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            if count >= rank:
                return (previous, bound)
            previous = bound
        return None


def _matches(labels: Labels, match: Mapping[str, str | None]) -> bool:
    return all(value is None or labels.get(key) == value for key, value in match.items())


@dataclass
class Samples:
    """Series by metric name: histograms (and summaries) and plain values."""

    hists: dict[str, list[tuple[Labels, Hist]]] = field(default_factory=dict)
    values: dict[str, list[tuple[Labels, float]]] = field(default_factory=dict)

    def add_hist(self, metric: str, labels: Labels, hist: Hist) -> None:
        self.hists.setdefault(metric, []).append((dict(labels), hist))

    def add_value(self, metric: str, labels: Labels, value: float) -> None:
        if math.isfinite(value):
            self.values.setdefault(metric, []).append((dict(labels), value))

    def hist(self, metric: str, **match: str | None) -> Hist:
        """The sum of the matching series (None matches any value)."""
        total = Hist()
        for labels, hist in self.hists.get(metric, ()):
            if _matches(labels, match):
                total = total + hist
        return total

    def hist_by(self, metric: str, key: str, **match: str | None) -> dict[str, Hist]:
        out: dict[str, Hist] = {}
        for labels, hist in self.hists.get(metric, ()):
            if _matches(labels, match):
                name = labels.get(key, "")
                out[name] = out.get(name, Hist()) + hist
        return out

    def value(self, metric: str, **match: str | None) -> float | None:
        found = [v for labels, v in self.values.get(metric, ()) if _matches(labels, match)]
        return sum(found) if found else None

    def value_by(
        self, metric: str, keys: Iterable[str], **match: str | None
    ) -> dict[tuple[str, ...], float]:
        names = tuple(keys)
        out: dict[tuple[str, ...], float] = {}
        for labels, value in self.values.get(metric, ()):
            if _matches(labels, match):
                key = tuple(labels.get(k, "") for k in names)
                out[key] = out.get(key, 0.0) + value
        return out

    def label_values(self, metric: str, key: str, **match: str | None) -> list[str]:
        seen = {
            labels.get(key, "")
            for labels, _ in self.hists.get(metric, ())
            if _matches(labels, match)
        }
        seen |= {
            labels.get(key, "")
            for labels, _ in self.values.get(metric, ())
            if _matches(labels, match)
        }
        return sorted(seen)
