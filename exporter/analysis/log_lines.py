"""Raw GitHub Actions job logs: `YYYY-MM-DDTHH:MM:SS.fffffffZ ` prefixes, continuation lines, and the
step each line belongs to (matched to the jobs API's steps by time, else by `##[group]Run` order).

Streaming: bytes in, lines out, constant memory."""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

_PREFIX = re.compile(rb"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?Z ")


@dataclass(frozen=True)
class StepWindow:
    number: int
    name: str
    started_at: float | None
    completed_at: float | None


@dataclass(frozen=True)
class LogLine:
    ts: float | None
    text: str
    step: int | None


class _HourCache:
    """Epoch of `YYYY-MM-DDTHH` prefixes: one calendar call per hour of log, not per line."""

    def __init__(self) -> None:
        self.key: bytes = b""
        self.epoch = 0.0

    def epoch_of(self, match: re.Match[bytes]) -> float:
        key = match.group(0)[:13]
        if key != self.key:
            y, mo, d, h = (int(match.group(i)) for i in range(1, 5))
            if not (1 <= mo <= 12 and 1 <= d <= 31 and h <= 23):
                raise ValueError("bad timestamp")
            self.key = key
            self.epoch = float(calendar.timegm((y, mo, d, h, 0, 0)))
        minute, second = int(match.group(5)), int(match.group(6))
        fraction = float(match.group(7)) if match.group(7) else 0.0
        return self.epoch + minute * 60 + second + fraction


def split_lines(chunks: Iterable[bytes], max_line: int = 64 * 1024) -> Iterator[bytes]:
    """Lines from byte chunks; a line longer than `max_line` is cut (the rest dropped), so one
    pathological line can't hold the memory."""
    pending = b""
    overflow = False
    for chunk in chunks:
        data = pending + chunk if pending else chunk
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if overflow:
                overflow = False
            else:
                yield data[start:end]
            start = end + 1
        pending = data[start:]
        if len(pending) > max_line:
            if not overflow:
                yield pending[:max_line]
            overflow = True
            pending = b""
    if pending and not overflow:
        yield pending


class StepMatcher:
    """Assigns lines to API steps: by time, the latest step that started at or before the line
    (steps run one after another; API times are whole seconds); without timestamps, by the order of
    `##[group]Run` headers. Lines are expected in log order (the pointer only moves forward)."""

    def __init__(self, steps: Sequence[StepWindow]) -> None:
        self.steps = sorted(
            (s for s in steps if s.started_at is not None and s.completed_at is not None),
            key=lambda s: (s.started_at or 0.0, s.number),
        )
        self.ordered = list(steps)
        self.index = 0
        self.order_index = 0

    def step_for(self, ts: float | None, text: str) -> int | None:
        if ts is not None and self.steps:
            while (
                self.index < len(self.steps) - 1
                and (self.steps[self.index + 1].started_at or 0.0) <= ts
            ):
                self.index += 1
            step = self.steps[self.index]
            if (step.started_at or 0.0) <= ts < (step.completed_at or 0.0) + 1:
                return step.number
            return None
        if not self.ordered:
            return None
        if text.startswith("##[group]Run ") and self.order_index < len(self.ordered) - 1:
            self.order_index += 1
        return self.ordered[self.order_index].number


def parse_log_lines(chunks: Iterable[bytes], steps: Sequence[StepWindow] = ()) -> Iterator[LogLine]:
    """Every line with its timestamp (continuation lines inherit the previous one) and step."""
    hours = _HourCache()
    matcher = StepMatcher(steps)
    last_ts: float | None = None
    first = True
    for line in split_lines(chunks):
        raw = line.removeprefix(b"\xef\xbb\xbf") if first else line
        first = False
        raw = raw.removesuffix(b"\r")
        match = _PREFIX.match(raw)
        ts = last_ts
        body = raw
        if match is not None:
            try:
                ts = hours.epoch_of(match)
                body = raw[match.end() :]
                last_ts = ts
            except ValueError:
                ts = last_ts
        text = body.decode("utf-8", errors="replace")
        yield LogLine(ts, text, matcher.step_for(ts, text))
