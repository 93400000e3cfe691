"""One pass over a job log: BuildKit builds and actions/cache restores, with the step of each."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from exporter.analysis.actions_cache import CacheRestore, CacheRestoreDetector
from exporter.analysis.buildkit import BuildKitParser, BuildSummary
from exporter.analysis.log_lines import StepWindow, parse_log_lines

# Builds kept per log: a real job runs a handful; a hostile or looping log can't grow memory.
MAX_BUILDS = 100


@dataclass
class JobLogFacts:
    builds: list[BuildSummary] = field(default_factory=list)
    restores: list[CacheRestore] = field(default_factory=list)
    lines: int = 0
    builds_dropped: int = 0

    def add(self, builds: list[BuildSummary]) -> None:
        room = MAX_BUILDS - len(self.builds)
        self.builds.extend(builds[: max(0, room)])
        self.builds_dropped += max(0, len(builds) - max(0, room))


def analyze_job_log(chunks: Iterable[bytes], steps: Sequence[StepWindow] = ()) -> JobLogFacts:
    facts = JobLogFacts()
    parser = BuildKitParser()
    restores = CacheRestoreDetector()
    for line in parse_log_lines(chunks, steps):
        facts.lines += 1
        built = parser.feed(line.text, line.ts, line.step)
        if built:
            facts.add(built)
        restores.feed(line.text, line.step)
    facts.add(parser.finish())
    facts.restores = [r for r in restores.restores if r.result is not None]
    return facts
