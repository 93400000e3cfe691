"""`actions/cache` restores in a job log: hit or miss per restore step, from what actions/cache v2–v4
(and actions/cache/restore) print. Post (save) steps are not restores."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_RESTORE_HEADER = re.compile(r"^##\[group\]Run actions/cache(?:/restore)?@")
_NEW_SECTION = re.compile(r"^##\[group\]Run |^Post job cleanup\.")
_HIT = (
    "Cache restored from key:",
    "Cache hit occurred on the primary key",
    "Cache restored successfully",
)
_MISS = ("Cache not found for input keys:",)


@dataclass
class CacheRestore:
    step: int | None
    result: Literal["hit", "miss"] | None = None


class CacheRestoreDetector:
    """Feed job-log lines; `restores` lists each actions/cache restore section and its outcome."""

    def __init__(self) -> None:
        self.restores: list[CacheRestore] = []
        self._current: CacheRestore | None = None

    def feed(self, text: str, step: int | None) -> None:
        if _NEW_SECTION.match(text):
            self._current = None
            if _RESTORE_HEADER.match(text):
                self._current = CacheRestore(step)
                self.restores.append(self._current)
            return
        current = self._current
        if current is None:
            return
        if current.step is None and step is not None:
            current.step = step
        if current.result != "hit" and text.startswith(_HIT):
            current.result = "hit"
        elif current.result is None and text.startswith(_MISS):
            current.result = "miss"
