"""Scenarios: the mission's pipeline before (`seed`), after (`optimized`), sliding back
(`regression`), and the journey from one to the other (`journey`). Pure and deterministic per seed."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

import yaml


@dataclass(frozen=True)
class StepSpec:
    name: str
    seconds: float


@dataclass(frozen=True)
class JobSpec:
    id: str
    steps: tuple[StepSpec, ...]
    needs: tuple[str, ...] = ()
    name: str | None = None
    runner: tuple[str, ...] = ("ubuntu-latest",)
    # Seconds from ready to started (the wait for a runner); None: the scenario's queue_range.
    queue: tuple[float, float] | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.id

    def scaled(self, factor: float, only: str | None = None) -> JobSpec:
        steps = tuple(
            replace(s, seconds=s.seconds * factor) if only is None or s.name == only else s
            for s in self.steps
        )
        return replace(self, steps=steps)


def _steps(*pairs: tuple[str, float]) -> tuple[StepSpec, ...]:
    return tuple(StepSpec(name, seconds) for name, seconds in pairs)


SETUP = ("Set up job", 2.0)
COMPLETE = ("Complete job", 1.0)

# The mission's pipeline today: 23–27 minutes.
BUILD = JobSpec(
    "build-docker-image",
    _steps(
        SETUP,
        ("Set up Docker Buildx", 8),
        ("Restore cache", 25),
        ("Build base layers", 60),
        ("Install Python dependencies", 70),
        ("npm install", 50),
        ("Install Chromium", 45),
        ("Build and push", 38),
        ("Post Restore cache", 1),
        COMPLETE,
    ),
)
TEST = JobSpec(
    "test-suite",
    _steps(
        SETUP,
        ("Checkout", 3),
        ("Pull images", 40),
        ("Run tests", 600),
        ("Upload JUnit report", 8),
        COMPLETE,
    ),
    needs=("build-docker-image",),
)
BUILD_PROD = JobSpec(
    "build-production-images",
    _steps(
        SETUP,
        ("Set up Docker Buildx", 8),
        ("Build web image", 230),
        ("Build celery image", 200),
        ("Push images", 38),
        COMPLETE,
    ),
    needs=("build-docker-image",),
)
CHECKS = JobSpec(
    "all-checks",
    _steps(SETUP, ("Lint", 30), ("Type check", 25), COMPLETE),
    needs=("test-suite",),
)
COVERAGE = JobSpec(
    "coverage-upload",
    _steps(SETUP, ("Download coverage", 20), ("Upload coverage", 275), COMPLETE),
    needs=("test-suite",),
)
TAG = JobSpec(
    "tag-production-images",
    _steps(
        SETUP,
        ("Log in to registry", 5),
        ("Re-tag web image", 160),
        ("Re-tag celery image", 170),
        COMPLETE,
    ),
    needs=("all-checks", "build-production-images"),
)
CLEANUP = JobSpec(
    "cleanup",
    _steps(SETUP, ("Delete temporary images", 25), COMPLETE),
    needs=("tag-production-images", "coverage-upload"),
)
SEED_JOBS = (BUILD, TEST, BUILD_PROD, CHECKS, COVERAGE, TAG, CLEANUP)

# After the plan: tags during the build, registry cache, multi-stage images, no Chromium: 10–12 min.
OPT_BUILD = JobSpec(
    "build-docker-image",
    _steps(
        SETUP,
        ("Set up Docker Buildx", 8),
        ("Restore cache", 12),
        ("Build base layers", 6),
        ("Install Python dependencies", 40),
        ("npm install", 35),
        ("Build and push", 57),
        COMPLETE,
    ),
)
OPT_TEST = replace(
    TEST,
    steps=_steps(
        SETUP,
        ("Checkout", 3),
        ("Pull images", 25),
        ("Run tests", 380),
        ("Upload JUnit report", 5),
        COMPLETE,
    ),
)
OPT_CHECKS = replace(CHECKS, steps=_steps(SETUP, ("Lint", 25), ("Type check", 20), COMPLETE))
OPT_BUILD_PROD = replace(
    BUILD_PROD,
    steps=_steps(SETUP, ("Set up Docker Buildx", 8), ("Build and push images", 200), COMPLETE),
)
OPT_CLEANUP = replace(CLEANUP, needs=("all-checks", "build-production-images", "coverage-upload"))
# Coverage is uploaded by a fast uploader in the background, off the critical path.
OPT_COVERAGE = replace(
    COVERAGE, steps=_steps(SETUP, ("Download coverage", 10), ("Upload coverage", 30), COMPLETE)
)
OPTIMIZED_JOBS = (OPT_BUILD, OPT_TEST, OPT_BUILD_PROD, OPT_CHECKS, OPT_COVERAGE, OPT_CLEANUP)


def _journey(progress: float) -> tuple[JobSpec, ...]:
    """Six stages of the plan, applied one after another over the simulated weeks."""
    stage = min(5, int(progress * 6))
    if stage == 0:
        return SEED_JOBS
    no_tag = (BUILD, TEST, BUILD_PROD, CHECKS, COVERAGE, OPT_CLEANUP)
    if stage == 1:
        return no_tag
    registry_cache = replace(
        BUILD,
        steps=tuple(
            replace(s, seconds=12) if s.name == "Restore cache" else s for s in BUILD.steps
        ),
    )
    if stage == 2:
        return (registry_cache, *no_tag[1:])
    if stage == 3:
        return (OPT_BUILD, *no_tag[1:])
    if stage == 4:
        return (
            OPT_BUILD,
            replace(TEST, steps=OPT_TEST.steps),
            BUILD_PROD,
            CHECKS,
            COVERAGE,
            OPT_CLEANUP,
        )
    return OPTIMIZED_JOBS


@dataclass(frozen=True)
class Scenario:
    name: str
    jobs_at: Callable[[float], tuple[JobSpec, ...]]
    run_interval: float = 1800.0  # simulated seconds between runs
    history_runs: int = 30  # runs created before the simulator's start
    failure_rate: float = 0.08
    rerun_rate: float = 0.5  # of failed runs
    pr_rate: float = 0.25
    queue_range: tuple[float, float] = (5.0, 40.0)
    noise: float = 0.06
    workflow_name: str = "CI"
    workflow_path: str = ".github/workflows/ci.yml"
    # Runs rotate over this many workflows (CI-1, CI-2, … when more than one).
    workflows: int = 1
    total_runs: int | None = None  # for progress-based scenarios: runs over which progress goes 0→1
    # GitHub's run list lags: a run appears in it (and in `created` searches) up to this many
    # simulated seconds after its created_at, a seeded lag per run; by id it is there at once.
    list_lag: float = 0.0
    # Test cases (app, index) that fail now and then: a failed run fails one or two of them, and
    # its re-run passes (flaky). Without, a failed run fails test_pages_0.
    flaky_cases: tuple[tuple[str, int], ...] = ()

    def workflow_of(self, index: int) -> tuple[str, str]:
        """(name, path) of run `index`'s workflow."""
        if self.workflows == 1:
            return self.workflow_name, self.workflow_path
        k = index % self.workflows + 1
        return f"{self.workflow_name}-{k}", self.workflow_path.replace(".yml", f"-{k}.yml")

    def jobs_for(self, index: int) -> tuple[JobSpec, ...]:
        total = self.total_runs or (self.history_runs + 1)
        progress = min(1.0, max(0.0, index / max(1, total - 1)))
        return self.jobs_at(progress)


def _regression(progress: float) -> tuple[JobSpec, ...]:
    if progress < 0.75:
        return OPTIMIZED_JOBS
    # A slow app landed in the test suite: the run slides back by about half the test time.
    return tuple(
        j.scaled(1.6, only="Run tests") if j.id == "test-suite" else j for j in OPTIMIZED_JOBS
    )


def _bench_jobs() -> tuple[JobSpec, ...]:
    """10 jobs of 8 steps: a setup job, three lanes of three jobs, and a final job."""
    jobs = []
    for index in range(10):
        steps = tuple(StepSpec(f"step {s}", 5.0 + (index * 7 + s * 3) % 25) for s in range(8))
        if index == 0:
            needs: tuple[str, ...] = ()
        elif index < 4:
            needs = ("job-0",)
        elif index < 9:
            needs = (f"job-{index - 3}",)
        else:
            needs = ("job-6", "job-7", "job-8")
        jobs.append(JobSpec(f"job-{index}", steps, needs=needs))
    return tuple(jobs)


BENCH_JOBS = _bench_jobs()


def _org_jobs() -> tuple[JobSpec, ...]:
    """A typical repository of an organisation: one workflow of 8 jobs of 4 steps (plus GitHub's
    set-up and complete steps) — lint, build, two test shards, checks, package, deploy, notify."""
    names = ("lint", "build", "test-1", "test-2", "checks", "package", "deploy", "notify")
    needs: dict[str, tuple[str, ...]] = {
        "build": ("lint",),
        "test-1": ("build",),
        "test-2": ("build",),
        "checks": ("build",),
        "package": ("test-1", "test-2", "checks"),
        "deploy": ("package",),
        "notify": ("deploy",),
    }
    jobs = []
    for index, name in enumerate(names):
        steps = _steps(
            SETUP,
            ("Checkout", 3.0),
            ("Set up toolchain", 10.0 + index),
            (f"Run {name}", 40.0 + 13 * index),
            ("Upload results", 4.0),
            COMPLETE,
        )
        jobs.append(JobSpec(name, steps, needs=needs.get(name, ())))
    return tuple(jobs)


ORG_JOBS = _org_jobs()

# A runner shortage: the test suite runs on a small self-hosted GPU pool and waits minutes for it.
SHORTAGE_JOBS = tuple(
    replace(j, runner=("self-hosted", "linux", "gpu"), queue=(240.0, 600.0))
    if j.id == "test-suite"
    else j
    for j in SEED_JOBS
)

SCENARIOS: dict[str, Scenario] = {
    "seed": Scenario("seed", lambda _p: SEED_JOBS),
    "optimized": Scenario("optimized", lambda _p: OPTIMIZED_JOBS, queue_range=(3.0, 15.0)),
    "regression": Scenario(
        "regression",
        _regression,
        queue_range=(3.0, 15.0),
        # Ten runs of history, twenty more in the optimized state, then the slide back: so a
        # Prometheus scraping from the start sees both sides of the change.
        history_runs=10,
        total_runs=40,
        failure_rate=0.03,
    ),
    "bench": Scenario(
        "bench",
        lambda _p: BENCH_JOBS,
        run_interval=600.0,
        history_runs=6,
        failure_rate=0.02,
        workflows=5,
        queue_range=(1.0, 10.0),
    ),
    # Five runs a day on two branches (main and pull requests), for organisation-scale benchmarks.
    "org": Scenario(
        "org",
        lambda _p: ORG_JOBS,
        run_interval=86400.0 / 5,
        history_runs=5,
        failure_rate=0.05,
        pr_rate=0.4,
        queue_range=(2.0, 20.0),
    ),
    "shortage": Scenario("shortage", lambda _p: SHORTAGE_JOBS),
    # The pipeline today with flaky tests: a quarter of the runs fail on one or two flaky cases,
    # most are re-run (23–27 minutes each) and pass; the rest are fixed by the next commit.
    "flaky": Scenario(
        "flaky",
        lambda _p: SEED_JOBS,
        history_runs=48,
        failure_rate=0.25,
        rerun_rate=0.7,
        flaky_cases=(("pages", 0), ("accounts", 2), ("photos", 1), ("blog", 3)),
    ),
    "journey": Scenario(
        "journey",
        _journey,
        queue_range=(3.0, 15.0),
        run_interval=4 * 3600.0,
        history_runs=6 * 7 * 6,
        total_runs=6 * 7 * 6,
        failure_rate=0.04,
    ),
}


def workflow_yaml(scenario: Scenario, jobs: tuple[JobSpec, ...]) -> str:
    """The workflow file at a commit: job ids, names and needs."""
    document: dict[str, object] = {
        "name": scenario.workflow_name,
        "on": {"push": {"branches": ["main"]}},
    }
    job_map: dict[str, object] = {}
    for job in jobs:
        body: dict[str, object] = {
            "runs-on": list(job.runner) if len(job.runner) > 1 else job.runner[0]
        }
        if job.name:
            body["name"] = job.name
        if job.needs:
            body["needs"] = list(job.needs)
        body["steps"] = [
            {"name": s.name, "run": "true"}
            for s in job.steps
            if s.name not in ("Set up job", "Complete job") and not s.name.startswith("Post ")
        ]
        job_map[job.id] = body
    document["jobs"] = job_map
    return yaml.safe_dump(document, sort_keys=False)


def git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def rng_for(seed: int, *parts: object) -> random.Random:
    digest = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
