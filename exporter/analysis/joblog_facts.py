"""One pass over a job log: BuildKit builds and actions/cache restores, with the step of each."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from exporter.analysis.actions_cache import CacheRestore, CacheRestoreDetector
from exporter.analysis.buildkit import BuildKitParser, BuildSummary
from exporter.analysis.joblog import StepWindow, parse_log_lines


@dataclass
class JobLogFacts:
    builds: list[BuildSummary] = field(default_factory=list)
    restores: list[CacheRestore] = field(default_factory=list)
    lines: int = 0


def analyze_job_log(chunks: Iterable[bytes], steps: Sequence[StepWindow] = ()) -> JobLogFacts:
    facts = JobLogFacts()
    parser = BuildKitParser()
    restores = CacheRestoreDetector()
    for line in parse_log_lines(chunks, steps):
        facts.lines += 1
        facts.builds.extend(parser.feed(line.text, line.ts, line.step))
        restores.feed(line.text, line.step)
    facts.builds.extend(parser.finish())
    facts.restores = [r for r in restores.restores if r.result is not None]
    return facts
