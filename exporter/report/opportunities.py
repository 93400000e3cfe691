"""Opportunities: changes the data points to, each with its estimated saving on the critical path
(the path's length by job means, with the job made shorter) and the numbers behind it."""

from __future__ import annotations

import heapq
import re
from collections.abc import Sequence
from dataclasses import dataclass

from exporter import metrics as m
from exporter.report import hints
from exporter.report.model import Bar, Evidence, Images, Opportunities, Opportunity, Tests
from exporter.report.paths import PathModel
from exporter.report.samples import Hist, Samples
from exporter.report.sections import GITHUB_STEPS, job_mean, own_steps

# Steps that only talk to a registry: log in, pull, push, tag, copy an image.
REGISTRY_STEP = re.compile(
    r"\b(log ?in|login|pull|push|re-?tag|retag|tag|promote|copy|crane|skopeo|manifest|registry)\b",
    re.IGNORECASE,
)
# Steps that move image bytes to or from a registry.
TRANSFER_STEP = re.compile(r"\b(pull|push|re-?tag|retag|promote|copy)\b", re.IGNORECASE)
# Steps that do other work even when they also push or pull.
OTHER_WORK = re.compile(r"\b(build|test|compile|lint|install|deploy)\b", re.IGNORECASE)
TEST_STEP = re.compile(r"\b(tests?|pytest|jest|spec|unittest)\b", re.IGNORECASE)
SHARDS = (2, 3, 4)
# Image sets less duplicated than this are not worth a change.
MIN_DUPLICATION = 0.1


@dataclass(frozen=True)
class Context:
    samples: Samples
    repo: str
    workflow: str
    path_jobs: Sequence[str]  # on the critical path, in order
    model: PathModel
    window: float | None  # seconds of the period (Prometheus), None for the state store

    def steps(self, job: str) -> tuple[list[Bar], float | None]:
        return own_steps(self.samples, self.repo, self.workflow, job)

    def job_time(self, job: str) -> float:
        """The job's duration in the path model (its mean over successful runs)."""
        return job_mean(self.samples, self.repo, self.workflow, job) or 0.0


def find(context: Context, tests: Tests, images: Images) -> Opportunities:
    items: list[Opportunity] = []
    for job in context.path_jobs:
        items.extend(
            found
            for found in (
                registry_only(context, job),
                cache_backend(context, job),
                test_split(context, job, tests),
            )
            if found is not None
        )
    items.extend(duplication(context, images))
    items = [i for i in items if i.minutes_saved > 0]
    items.sort(key=lambda i: (-i.minutes_saved, i.title))
    return Opportunities(
        items,
        context.model.length(),
        context.model.kind,
        None if items else hints.OPPORTUNITIES,
    )


def _own(bars: list[Bar]) -> list[Bar]:
    return [b for b in bars if b.name not in GITHUB_STEPS and not b.name.startswith("Post ")]


def _s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _assumption(model: PathModel, what: str) -> str:
    if model.kind == "needs":
        return (
            f"{what}; the critical path is recomputed over the needs: graph with each job's mean."
        )
    return (
        f"{what}; without the needs: graph the path is taken as a chain, so this is an upper bound."
    )


def registry_only(context: Context, job: str) -> Opportunity | None:
    steps, job_mean = context.steps(job)
    own = _own(steps)
    if not own or not all(
        REGISTRY_STEP.search(s.name) and not OTHER_WORK.search(s.name) for s in own
    ):
        return None
    saving = context.model.saving({job: 0.0})
    evidence = [Evidence(s.name, f"{_s(s.seconds)} per run") for s in own]
    evidence.append(Evidence("job (mean)", _s(job_mean or 0.0)))
    evidence.append(
        Evidence(
            "critical path by job means",
            f"{_s(context.model.length())} → {_s(context.model.length() - saving)}",
        )
    )
    return Opportunity(
        "registry_only_job",
        f"{job}: a critical-path job that only talks to a registry — tag and push from the build instead",
        saving / 60,
        evidence,
        _assumption(
            context.model,
            "The job's work moves into the job that builds the images (tags pushed with the build)",
        ),
    )


def cache_backend(context: Context, job: str) -> Opportunity | None:
    """Another cache backend measured faster (import + export per build) than the job's own."""
    scope = {"repository": context.repo, "workflow": context.workflow}
    s = context.samples
    builds = s.hist_by(m.BUILDKIT_BUILD.name, "cache_backend", job_name=job, **scope)
    if not builds:
        return None
    current = max(builds, key=lambda b: builds[b].count)
    cost = _backend_costs(s, scope)
    if current not in cost or len(cost) < 2:
        return None
    best = min(cost, key=lambda b: cost[b])
    per_build = cost[current] - cost[best]
    job_runs = s.hist(m.JOB_DURATION.name, job_name=job, **scope).count
    if best == current or per_build <= 0 or not job_runs:
        return None
    per_run = per_build * builds[current].count / job_runs
    saving = context.model.saving({job: max(0.0, context.job_time(job) - per_run)})
    evidence = [
        Evidence(f"{name} cache", f"{_s(value)} import + export per build")
        for name, value in sorted(cost.items())
    ]
    evidence.append(
        Evidence("builds per run of the job", f"{builds[current].count / job_runs:.1f}")
    )
    if context.window:
        weekly = s.hist(m.BUILDKIT_BUILD.name, **scope).count * 7 * 86400 / context.window
        evidence.append(
            Evidence(
                "builds per week", f"{weekly:.0f} → {weekly * per_build / 60:.0f} min per week"
            )
        )
    return Opportunity(
        "cache_backend",
        f"{job}: use the {best} build cache instead of {current}",
        saving / 60,
        evidence,
        _assumption(
            context.model,
            f"Each build's cache import and export take what they take with {best} today",
        ),
    )


def _backend_costs(s: Samples, scope: dict[str, str]) -> dict[str, float]:
    builds = s.hist_by(m.BUILDKIT_BUILD.name, "cache_backend", **scope)
    imports = s.hist_by(m.BUILDKIT_IMPORT.name, "cache_backend", **scope)
    exports = s.hist_by(m.BUILDKIT_EXPORT.name, "cache_backend", **scope)
    return {
        name: (imports.get(name, Hist()).sum + exports.get(name, Hist()).sum) / hist.count
        for name, hist in builds.items()
        if hist.count and name not in ("none", "unknown")
    }


def shard_makespan(suites: Sequence[float], shards: int) -> float:
    """Longest shard when suites go, slowest first, to the least loaded shard."""
    loads = [0.0] * shards
    for seconds in sorted(suites, reverse=True):
        heapq.heapreplace(loads, loads[0] + seconds)
    return max(loads)


def test_split(context: Context, job: str, tests: Tests) -> Opportunity | None:
    steps, job_mean = context.steps(job)
    test_steps = [
        b
        for b in steps
        if TEST_STEP.search(b.name) and not re.search(r"upload|report", b.name, re.I)
    ]
    suites = [s.mean for s in tests.suites if s.mean]
    if not test_steps or len(suites) < 2 or job_mean is None:
        return None
    step = test_steps[0]  # the slowest
    total = sum(suites)
    evidence = [
        Evidence(f"suite {s.name}", f"{_s(s.mean or 0.0)} per run")
        for s in tests.suites[:8]
        if s.mean
    ]
    evidence.append(
        Evidence(f"step {step.name}", f"{_s(step.seconds)} per run ({_s(total)} of suite time)")
    )
    best = 0.0
    for shards in SHARDS:
        wall = step.seconds * shard_makespan(suites, shards) / total
        expected = context.job_time(job) - step.seconds + wall
        saving = context.model.saving({job: expected})
        best = max(best, saving)
        evidence.append(
            Evidence(f"{shards} shards", f"job ≈ {_s(expected)}, critical path −{_s(saving)}")
        )
    return Opportunity(
        "test_split",
        f"{job}: split the tests into shards by suite",
        best / 60,
        evidence,
        _assumption(
            context.model,
            "Each shard runs its suites in the step's time per suite second and repeats the job's other steps (more runner minutes)",
        ),
    )


def duplication(context: Context, images: Images) -> list[Opportunity]:
    """Bytes shared between the images of a set are pulled and pushed again for each image."""
    transfers: dict[str, list[Bar]] = {}
    for job in context.path_jobs:
        steps, _ = context.steps(job)
        moving = [
            b for b in _own(steps) if TRANSFER_STEP.search(b.name) and not OTHER_WORK.search(b.name)
        ]
        if moving:
            transfers[job] = moving
    found = []
    for image_set in images.sets:
        share = image_set.duplication
        if share < MIN_DUPLICATION or not transfers:
            continue
        overrides = {}
        for job, moving in transfers.items():
            moved = share * sum(b.seconds for b in moving)
            overrides[job] = max(0.0, context.job_time(job) - moved)
        saving = context.model.saving(overrides)
        evidence = [
            Evidence(
                f"set {image_set.name}",
                f"{image_set.total / 1e9:.2f} GB total, {image_set.unique / 1e9:.2f} GB unique: {share:.0%} duplicated",
            ),
            *(
                Evidence(f"{job}: {b.name}", f"{_s(b.seconds)} per run")
                for job, bars in transfers.items()
                for b in bars
            ),
        ]
        found.append(
            Opportunity(
                "image_duplication",
                f"image set {image_set.name}: build the images from one multi-stage Dockerfile so they share their base",
                saving / 60,
                evidence,
                _assumption(
                    context.model,
                    "Pull, push and tag steps take time in proportion to the bytes they move, and the duplicated bytes go",
                ),
            )
        )
    return found
