"""Stored bucket layouts of histograms: a value goes into one slot, and any bound on the layout's
grid renders exactly from the slot counts. Memory per series is bounded by the layout, never by the
number of observations.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.metrics import MetricSpec

# The fine grid of histograms whose buckets follow the configured targets: 1 s slots up to two
# hours, 1 min slots up to a day, then one overflow slot. Targets on that grid (whole seconds, and
# whole minutes above two hours) render exactly, also after they change.
FINE_SECONDS_UNTIL = 7200
FINE_MINUTES_UNTIL = 86400
_OVERFLOW = FINE_SECONDS_UNTIL + (FINE_MINUTES_UNTIL - FINE_SECONDS_UNTIL) // 60 + 1


@dataclass(frozen=True)
class FineLayout:
    signature: str = f"fine:{FINE_SECONDS_UNTIL}:{FINE_MINUTES_UNTIL}"

    def slot(self, value: float) -> int:
        if value <= FINE_SECONDS_UNTIL:
            return max(0, math.ceil(value))
        if value <= FINE_MINUTES_UNTIL:
            return FINE_SECONDS_UNTIL + math.ceil((value - FINE_SECONDS_UNTIL) / 60)
        return _OVERFLOW

    def slot_of_bound(self, bound: float) -> int:
        """The last slot whose values are all ≤ bound."""
        if bound >= FINE_MINUTES_UNTIL:
            return _OVERFLOW - 1
        if bound <= FINE_SECONDS_UNTIL:
            return math.floor(bound)
        return FINE_SECONDS_UNTIL + math.floor((bound - FINE_SECONDS_UNTIL) / 60)

    @staticmethod
    def on_grid(bound: float) -> bool:
        if bound <= FINE_SECONDS_UNTIL:
            return bound == int(bound)
        return bound <= FINE_MINUTES_UNTIL and bound % 60 == 0


@dataclass(frozen=True)
class FixedLayout:
    """One slot per bucket of the metric's own bounds, plus +Inf."""

    bounds: tuple[float, ...]

    @property
    def signature(self) -> str:
        return "fixed:" + ",".join(repr(float(b)) for b in self.bounds)

    def slot(self, value: float) -> int:
        return bisect.bisect_left(self.bounds, value)

    def slot_of_bound(self, bound: float) -> int:
        return bisect.bisect_right(self.bounds, bound) - 1


Layout = FineLayout | FixedLayout


def layout_for(spec: MetricSpec) -> Layout:
    return FineLayout() if spec.target_buckets else FixedLayout(tuple(map(float, spec.buckets)))


def cumulative(layout: Layout, slots: Mapping[int, int], bounds: Sequence[float]) -> list[int]:
    """Cumulative counts at each bound (le is inclusive)."""
    ordered = sorted(slots.items())
    result: list[int] = []
    index = running = 0
    for bound in bounds:
        last = layout.slot_of_bound(bound)
        while index < len(ordered) and ordered[index][0] <= last:
            running += ordered[index][1]
            index += 1
        result.append(running)
    return result
