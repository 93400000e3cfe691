"""Facts → observations: what one unit of facts (a completed run attempt, a job log, a test report,
a poll of volatile gauges) adds to the metrics, and the keys that make it count exactly once.

Pure functions: no I/O and no store. The poller, the webhook receiver and `backfill` all turn facts
into a `Unit` here; the store applies a unit atomically, deciding series caps at commit.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from exporter import metrics as m
from exporter.analysis.build_log import JobLogFacts
from exporter.analysis.buildkit import BuildSummary
from exporter.analysis.flaky import AttemptRef, CaseOutcomes, CaseReport
from exporter.analysis.junit import RESULTS, Report
from exporter.analysis.pipeline import JobFacts, RunFacts

OTHER = "other"
Labels = tuple[str, ...]


@dataclass(frozen=True)
class Observe:
    """One value into a histogram."""

    spec: m.MetricSpec
    labels: Labels
    value: float


@dataclass(frozen=True)
class Increment:
    spec: m.MetricSpec
    labels: Labels
    amount: float = 1.0


@dataclass(frozen=True)
class Latest:
    """A gauge that keeps the value of the latest moment `at` seen (catch-up may come out of order)."""

    spec: m.MetricSpec
    labels: Labels
    value: float
    at: float


@dataclass(frozen=True)
class ReplaceGroup:
    """Every series of `spec` under `prefix` replaced by `entries` (label suffix → value): the
    latest run's critical path, active runs, image sizes. With `at`, only when not older than the
    group's stored moment; without, always."""

    spec: m.MetricSpec
    prefix: Labels
    entries: tuple[tuple[Labels, float], ...]
    at: float | None = None
    # Entries folded onto one series (`other`) are combined: counts add up, a "since when"
    # timestamp takes the earliest.
    combine: Literal["sum", "min"] = "sum"


Item = Observe | Increment | Latest | ReplaceGroup


@dataclass(frozen=True)
class Task:
    """Work that follows a recorded unit (an enrichment: a job log, a test report), stored with
    the unit so a crash loses neither; `data` holds the facts it needs, as JSON values."""

    kind: str
    key: str
    source: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Unit:
    """Observations applied all together or not at all. `keys` (kind, key) mark it observed: a unit
    whose key was seen before applies nothing. `done` names pending tasks this unit completes (it
    applies only while they are pending); `enqueue` adds tasks with it. `limits` gives the
    scoped caps (metrics.ScopedCap names) their sizes. `cases` (a test report's case outcomes)
    goes into the flaky-test history with it: the store adds what that finds (flaky_items)."""

    source: str
    items: tuple[Item, ...] = ()
    keys: tuple[tuple[str, str], ...] = ()
    enqueue: tuple[Task, ...] = ()
    done: tuple[tuple[str, str], ...] = ()
    limits: Mapping[str, int] = field(default_factory=dict)
    cases: CaseReport | None = None


@dataclass(frozen=True)
class RepositoryPolicy:
    """How one repository's facts become labels: the branch allowlist, targets, caps and which
    enrichments follow a completed attempt."""

    repository: str
    branches: frozenset[str]
    # (workflow, branch) → the target's upper bound in seconds.
    targets: Mapping[tuple[str, str], float] = field(default_factory=dict)
    log_jobs: tuple[str, ...] = ()
    junit_artifacts: tuple[str, ...] = ()
    # Jobs (globs) whose steps also get a histogram.
    step_histograms: tuple[str, ...] = ()
    max_instructions: int = 50
    max_suites: int = 100
    max_runner_label_sets: int = 10
    max_workflows: int = 50
    series_ttl: float = 14 * 86400.0
    # Workflow names the config names (allowlist, targets, image runs): never folded.
    named_workflows: frozenset[str] = frozenset()
    flaky_window: float = 14 * 86400.0
    max_cases: int = 20_000

    @property
    def source(self) -> str:
        return f"github:{self.repository}"

    @property
    def limits(self) -> dict[str, int]:
        return {
            m.INSTRUCTIONS_CAP.name: self.max_instructions,
            m.SUITES_CAP.name: self.max_suites,
            m.RUNNERS_CAP.name: self.max_runner_label_sets,
        }

    def branch(self, name: str) -> str:
        return name if name in self.branches else OTHER

    def reads_log(self, job: JobFacts) -> bool:
        return job.result != "skip" and any(fnmatch.fnmatchcase(job.name, g) for g in self.log_jobs)

    def step_histogram(self, job: str) -> bool:
        return any(fnmatch.fnmatchcase(job, glob) for glob in self.step_histograms)


def attempt_key(repository: str, run_id: int, attempt: int) -> tuple[str, str]:
    return ("attempt", f"{repository}/{run_id}/{attempt}")


def job_key(repository: str, job_id: int, attempt: int) -> tuple[str, str]:
    """A job counts once per run attempt, whether a webhook or a poll saw it first."""
    return ("job", f"{repository}/{job_id}/{attempt}")


# -- a completed run attempt --------------------------------------------------------------------
def run_items(facts: RunFacts, policy: RepositoryPolicy) -> list[Item]:
    repo, workflow = policy.repository, facts.workflow
    branch = policy.branch(facts.branch)
    at = facts.completed_at
    items: list[Item] = [
        Observe(m.RUN_DURATION, (repo, workflow, branch, facts.event, facts.result), facts.seconds),
        Latest(m.RUN_LAST_DURATION, (repo, workflow, branch), facts.seconds, at),
        Increment(m.RUN_CRITICAL_PATH_SOURCE, (repo, workflow, facts.critical_path_source)),
        Increment(m.RUNS_OBSERVED, (repo,)),
    ]
    # A failed run's path ends where it stopped: only successful runs say what the path costs.
    if facts.critical_path and facts.result == "success":
        items.append(
            Observe(m.RUN_CRITICAL_PATH, (repo, workflow, branch), facts.critical_path_seconds)
        )
        path: dict[Labels, float] = {}
        for job in facts.critical_path:
            path[(job.name,)] = path.get((job.name,), 0.0) + job.seconds
        items.append(
            ReplaceGroup(
                m.RUN_LAST_CRITICAL_PATH_JOB, (repo, workflow, branch), tuple(path.items()), at
            )
        )
    upper = policy.targets.get((workflow, facts.branch))
    if upper is not None and facts.result == "success":
        outcome = "within" if facts.seconds <= upper else "above"
        items.append(Increment(m.RUN_TARGET, (repo, workflow, facts.branch, outcome)))
    return items


def job_items(
    workflow: str, branch_name: str, job: JobFacts, policy: RepositoryPolicy
) -> list[Item]:
    repo = policy.repository
    branch = policy.branch(branch_name)
    completed_at = job.completed_at or job.started_at or 0.0
    items: list[Item] = [
        Observe(m.JOB_DURATION, (repo, workflow, job.name, job.result), job.seconds)
    ]
    if job.queue_seconds is not None:
        items.append(Observe(m.JOB_QUEUE, (repo, workflow, job.runner), job.queue_seconds))
    if job.result != "skip":
        items.append(
            Latest(
                m.JOB_LAST_DURATION, (repo, workflow, branch, job.name), job.seconds, completed_at
            )
        )
    histogram = policy.step_histogram(job.name)
    for step in job.steps:
        labels = (repo, workflow, job.name, step.name, step.result)
        items.append(Observe(m.STEP_DURATION, labels, step.seconds))
        if histogram:
            items.append(Observe(m.STEP_DISTRIBUTION, labels, step.seconds))
        if job.result != "skip":
            last = (repo, workflow, job.name, step.name)
            items.append(Latest(m.STEP_LAST_DURATION, last, step.seconds, completed_at))
    return items


def enrichment_tasks(facts: RunFacts, policy: RepositoryPolicy) -> list[Task]:
    """The job logs and the test report to read for this attempt, as pending tasks."""
    tasks = [
        Task("log", f"{policy.repository}/{job.id}", policy.source, log_task_data(facts, job))
        for job in facts.jobs
        if policy.reads_log(job)
    ]
    if policy.junit_artifacts:
        tasks.append(
            Task(
                "junit",
                f"{policy.repository}/{facts.run_id}/{facts.attempt}",
                policy.source,
                {
                    "run_id": facts.run_id,
                    "attempt": facts.attempt,
                    "workflow": facts.workflow,
                    "created_at": facts.created_at,
                    "started_at": facts.started_at,
                    "completed_at": facts.completed_at,
                    "head_sha": facts.head_sha,
                    "seconds": facts.seconds,
                },
            )
        )
    return tasks


def log_task_data(facts: RunFacts, job: JobFacts) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "job_name": job.name,
        "workflow": facts.workflow,
        "completed_at": job.completed_at or facts.completed_at,
        "steps": [[s.number, s.name, s.started_at, s.completed_at, s.seconds] for s in job.steps],
    }


def job_unit(
    job: JobFacts, workflow: str, branch: str, attempt: int, policy: RepositoryPolicy
) -> Unit:
    """One completed job of an attempt: its duration, queue time, steps."""
    return Unit(
        source=policy.source,
        items=tuple(job_items(workflow, branch, job, policy)),
        keys=(job_key(policy.repository, job.id, attempt),),
        limits=policy.limits,
    )


def attempt_units(facts: RunFacts, policy: RepositoryPolicy) -> tuple[Unit, ...]:
    """Everything a completed attempt adds: the run's unit (run time, critical path, the target
    counter, and the enrichment tasks that follow) and one unit per job — each counted once,
    committed together (a job a webhook already recorded is skipped)."""
    run = Unit(
        source=policy.source,
        items=tuple(run_items(facts, policy)),
        keys=(attempt_key(policy.repository, facts.run_id, facts.attempt),),
        enqueue=tuple(enrichment_tasks(facts, policy)),
        limits=policy.limits,
    )
    jobs = (job_unit(j, facts.workflow, facts.branch, facts.attempt, policy) for j in facts.jobs)
    return (run, *jobs)


def skipped_attempt_unit(repository: str, run_id: int, attempt: int, source: str) -> Unit:
    """An attempt that can never be observed (deleted, or given up on): marked, nothing counted."""
    return Unit(source=source, keys=(attempt_key(repository, run_id, attempt),))


def task_done_unit(task: Task) -> Unit:
    """A pending task finished without observations (its upstream could not be read)."""
    return Unit(source=task.source, done=((task.kind, task.key),))


# -- enrichments ----------------------------------------------------------------------------------
def job_log_unit(task: Task, facts: JobLogFacts | None, policy: RepositoryPolicy) -> Unit:
    """BuildKit builds and actions/cache restores found in one job's log (None: the log could not
    be read; the task is done without observations)."""
    items: list[Item] = []
    if facts is not None:
        items = build_log_items(task.data, facts, policy.repository)
    return Unit(
        source=task.source,
        items=tuple(items),
        done=((task.kind, task.key),),
        limits=policy.limits,
    )


def build_log_items(data: Mapping[str, Any], facts: JobLogFacts, repo: str) -> list[Item]:
    workflow, job = str(data["workflow"]), str(data["job_name"])
    completed_at = float(data["completed_at"])
    items: list[Item] = []
    for build in facts.builds:
        items.extend(_build_items(build, (repo, workflow, job), completed_at))
    step_seconds = {int(step[0]): float(step[4]) for step in data.get("steps", ())}
    for restore in facts.restores:
        items.append(Increment(m.CACHE_RESTORES, (repo, workflow, job, str(restore.result))))
        if restore.step is not None and restore.step in step_seconds:
            items.append(
                Observe(m.CACHE_RESTORE_SECONDS, (repo, workflow, job), step_seconds[restore.step])
            )
    return items


def _build_items(build: BuildSummary, job: Labels, completed_at: float) -> list[Item]:
    """One BuildKit build of a job: duration, cache import/export, steps, hit ratio, instructions."""
    scope = (*job, build.cache_backend)
    items: list[Item] = [Observe(m.BUILDKIT_BUILD, scope, build.duration_seconds)]
    if build.imported:
        items.append(Observe(m.BUILDKIT_IMPORT, scope, build.cache_import_seconds))
    if build.exported:
        items.append(Observe(m.BUILDKIT_EXPORT, scope, build.cache_export_seconds))
    items.extend(
        Increment(m.BUILDKIT_STEPS, (*job, result), count)
        for result, count in build.steps.items()
        if count
    )
    if build.cache_hit_ratio is not None:
        # Builds of one log in order: the last one is the latest.
        at = completed_at + build.index * 1e-3
        items.append(Latest(m.BUILDKIT_HIT_RATIO, job, build.cache_hit_ratio, at))
    items.extend(
        Observe(m.BUILDKIT_STEP_DURATION, (*job, i.stage, i.instruction), i.seconds)
        for i in build.instructions
        if i.result == "executed"
    )
    return items


def junit_unit(
    task: Task,
    report: Report | None,
    artifact_ids: Iterable[int],
    policy: RepositoryPolicy,
    cases: CaseOutcomes | None = None,
) -> Unit:
    """Per-suite test time and case counts of one attempt's reports; each artifact counts once.
    With the attempt's case outcomes, they go into the flaky-test history with the unit."""
    repo, workflow = policy.repository, str(task.data["workflow"])
    items: list[Item] = []
    if report is not None and report.suites:
        latest: list[tuple[Labels, float]] = []
        for suite, totals in sorted(report.suites.items()):
            items.append(Observe(m.TEST_SUITE_DURATION, (repo, workflow, suite), totals.seconds))
            latest.append(((suite,), totals.seconds))
            for result in RESULTS:
                if totals.counts[result]:
                    items.append(
                        Increment(
                            m.TEST_CASES, (repo, workflow, suite, result), totals.counts[result]
                        )
                    )
        at = float(task.data["completed_at"])
        items.append(ReplaceGroup(m.TEST_SUITE_LAST, (repo, workflow), tuple(latest), at))
    return Unit(
        source=task.source,
        items=tuple(items),
        keys=tuple(("artifact", f"{repo}/{artifact_id}") for artifact_id in artifact_ids),
        done=((task.kind, task.key),),
        limits=policy.limits,
        cases=case_report(task, report, cases, policy),
    )


def case_report(
    task: Task, report: Report | None, cases: CaseOutcomes | None, policy: RepositoryPolicy
) -> CaseReport | None:
    """The attempt's case outcomes for the flaky-test history; None without a report, or for a
    task stored before tasks carried the head SHA."""
    data = task.data
    if report is None or cases is None or not report.suites or not data.get("head_sha"):
        return None
    attempt = AttemptRef(
        run_id=int(data["run_id"]),
        attempt=int(data["attempt"]),
        sha=str(data["head_sha"]),
        at=float(data["completed_at"]),
        seconds=float(data.get("seconds") or 0.0),
        failed=cases.failed,
    )
    return CaseReport(
        repository=policy.repository,
        workflow=str(data["workflow"]),
        attempt=attempt,
        cases=cases.cases,
        suites=tuple(sorted(report.suites)),
        overflow=cases.overflow,
        window=policy.flaky_window,
        limit=policy.max_cases,
    )


@dataclass(frozen=True)
class FlakyFindings:
    """What recording one report in the flaky-test history found (the store computes it)."""

    flaky: Mapping[str, int]  # suite → new flaky occurrences
    reruns: int
    flaky_cases: Mapping[str, int]  # suite → distinct flaky cases within the window
    held: int
    evicted: int


def flaky_items(report: CaseReport, found: FlakyFindings) -> list[Item]:
    """Flaky occurrences by suite, re-runs after a failure, the flaky cases per suite and the
    history's own size. Counters start at 0 for every suite seen, so the first occurrence is an
    increase."""
    repo, workflow = report.repository, report.workflow
    items: list[Item] = [
        Increment(m.TEST_CASE_FLAKY, (repo, workflow, suite), found.flaky.get(suite, 0))
        for suite in sorted(set(report.suites) | set(found.flaky))
    ]
    items.append(Increment(m.TEST_RERUNS, (repo, workflow), found.reruns))
    entries = tuple(
        ((suite,), float(found.flaky_cases.get(suite, 0)))
        for suite in sorted(set(report.suites) | set(found.flaky_cases))
    )
    items.append(
        ReplaceGroup(m.TEST_SUITE_FLAKY_CASES, (repo, workflow), entries, report.attempt.at)
    )
    items.append(ReplaceGroup(m.TEST_CASES_HELD, (repo,), (((), float(found.held)),)))
    for reason, count in (("evicted", found.evicted), ("overflow", report.overflow)):
        if count:
            items.append(Increment(m.TEST_CASES_DROPPED, (repo, reason), count))
    return items


# -- volatile gauges --------------------------------------------------------------------------------
def replace_unit(
    source: str,
    spec: m.MetricSpec,
    prefix: Labels,
    values: Iterable[tuple[Labels, float]],
    limits: Mapping[str, int] | None = None,
    *,
    combine: Literal["sum", "min"] = "sum",
) -> Unit:
    """Replace every series of `spec` under `prefix` (values: full label tuple → value)."""
    entries = tuple((labels[len(prefix) :], value) for labels, value in values)
    group = ReplaceGroup(spec, prefix, entries, combine=combine)
    return Unit(source=source, items=(group,), limits=limits or {})
