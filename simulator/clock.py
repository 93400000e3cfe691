"""The simulator's clock: simulated time runs `speed` times faster than real time from an anchor,
and can be advanced by hand (tests use speed 0 and advance explicitly)."""

from __future__ import annotations

import threading
import time


class SimClock:
    def __init__(self, start: float, speed: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._anchor_sim = start
        self._anchor_real = time.monotonic()
        self.speed = speed

    def now(self) -> float:
        with self._lock:
            return self._anchor_sim + (time.monotonic() - self._anchor_real) * self.speed

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._anchor_sim += seconds
            return self._anchor_sim + (time.monotonic() - self._anchor_real) * self.speed

    def set_speed(self, speed: float) -> None:
        with self._lock:
            now_real = time.monotonic()
            self._anchor_sim += (now_real - self._anchor_real) * self.speed
            self._anchor_real = now_real
            self.speed = speed
