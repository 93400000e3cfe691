"""Backoff with jitter, shared by the GitHub and registry clients."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 0.5
    cap: float = 30.0
    # Longest wait slept inside a poll; longer waits end the poll and defer the next one.
    max_inline_wait: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        """Exponential with full jitter in [0.5, 1.5) × base × 2^attempt, capped."""
        return float(min(self.cap, self.base * (2**attempt)) * (0.5 + self.rng.random()))
