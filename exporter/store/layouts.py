"""Stored bucket layouts of histograms: a value goes into one slot, and any bound on the layout's
grid renders exactly from the slot counts. Memory per series is bounded by the layout, never by the
number of observations.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Iterator, Mapping, Sequence
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

# A slot's count lives in the low bits of its word, the slot number above them.
_SHIFT = 40
_COUNT = (1 << _SHIFT) - 1
_MAX_SLOT = (1 << (64 - _SHIFT)) - 1


class Slots(Mapping[int, int]):
    """Slot → count, compactly: one sorted array of 64-bit words `slot << 40 | count`, 8 bytes per
    used slot (a dict with int keys costs about 60), so a run histogram holding months of runs
    (thousands of used fine slots) stays a few KiB. Immutable to its readers: `added` returns a
    copy; only a plan changes the copy it made (`add`) before the copy is published."""

    __slots__ = ("_words",)

    def __init__(self, counts: Mapping[int, int] | None = None) -> None:
        items = sorted((counts or {}).items())
        self._words = array("Q", [_word(slot, count) for slot, count in items if count > 0])

    def __getitem__(self, slot: int) -> int:
        index = bisect.bisect_left(self._words, slot << _SHIFT) if 0 <= slot <= _MAX_SLOT else -1
        if 0 <= index < len(self._words) and self._words[index] >> _SHIFT == slot:
            return int(self._words[index] & _COUNT)
        raise KeyError(slot)

    def __iter__(self) -> Iterator[int]:
        return (word >> _SHIFT for word in self._words)

    def __len__(self) -> int:
        return len(self._words)

    def items(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        """(slot, count) in slot order."""
        return ((word >> _SHIFT, word & _COUNT) for word in self._words)

    def __repr__(self) -> str:
        return f"Slots({dict(self.items())})"

    def added(self, slot: int) -> Slots:
        """A copy with one more observation in `slot`."""
        copy = Slots()
        copy._words = self._words[:]
        copy.add(slot)
        return copy

    def add(self, slot: int) -> None:
        """One more observation in `slot`, in place: only for a copy nobody reads yet."""
        assert self is not EMPTY, "the shared empty Slots is never changed"
        words = self._words
        index = bisect.bisect_left(words, slot << _SHIFT)
        if index < len(words) and words[index] >> _SHIFT == slot:
            if words[index] & _COUNT == _COUNT:
                raise OverflowError(f"slot {slot} holds {_COUNT} observations")
            words[index] += 1
        else:
            words.insert(index, _word(slot, 1))


def _word(slot: int, count: int) -> int:
    if not 0 <= slot <= _MAX_SLOT or not 0 <= count <= _COUNT:
        raise ValueError(f"slot {slot} with count {count} is out of range")
    return slot << _SHIFT | count


EMPTY = Slots()


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
