"""The simulated timeline: runs, attempts, jobs and steps with exact timestamps, generated
deterministically from a scenario and a seed, and the state of each at any simulated moment."""

from __future__ import annotations

import hashlib
import math
import random
import threading
from dataclasses import dataclass, field

from simulator.scenarios import JobSpec, Scenario, git_blob_sha, rng_for, workflow_yaml


@dataclass
class SimStep:
    name: str
    number: int
    conclusion: str
    started_at: float | None
    completed_at: float | None


@dataclass
class SimJob:
    id: int
    name: str
    spec_id: str
    labels: tuple[str, ...]
    created_at: float
    started_at: float
    completed_at: float
    conclusion: str
    steps: list[SimStep]


@dataclass
class SimAttempt:
    number: int
    created_at: float
    jobs: list[SimJob]
    conclusion: str
    critical_path: list[str]

    @property
    def first_start(self) -> float:
        return min(j.started_at for j in self.jobs)

    @property
    def end(self) -> float:
        return max(j.completed_at for j in self.jobs)

    def events_until(self, t: float) -> float:
        """The latest moment ≤ t at which something about this attempt changed."""
        times = [self.created_at]
        for job in self.jobs:
            times.extend(x for x in (job.created_at, job.started_at, job.completed_at) if x <= t)
        return max(x for x in times if x <= t)


@dataclass
class SimRun:
    repository: str
    index: int
    id: int
    run_number: int
    created_at: float
    branch: str
    event: str
    head_sha: str
    workflow_text: str
    workflow: str = "CI"
    workflow_path: str = ".github/workflows/ci.yml"
    attempts: list[SimAttempt] = field(default_factory=list)
    list_lag: float = 0.0
    # The test cases (app, index) a failed attempt of this run fails.
    failing_cases: tuple[tuple[str, int], ...] = (("pages", 0),)

    @property
    def listed_at(self) -> float:
        """When the run shows up in the runs list: GitHub's list trails created_at."""
        return self.created_at + self.list_lag

    @property
    def blob_sha(self) -> str:
        return git_blob_sha(self.workflow_text.encode())

    def attempt_at(self, t: float) -> SimAttempt | None:
        visible = [a for a in self.attempts if a.created_at <= t]
        return visible[-1] if visible else None


def _topological(jobs: tuple[JobSpec, ...]) -> list[JobSpec]:
    by_id = {j.id: j for j in jobs}
    done: list[JobSpec] = []
    seen: set[str] = set()

    def visit(job: JobSpec) -> None:
        if job.id in seen:
            return
        seen.add(job.id)
        for need in job.needs:
            visit(by_id[need])
        done.append(job)

    for job in jobs:
        visit(job)
    return done


class Timeline:
    """All runs of one repository under one scenario."""

    RUN_ID_BASE = 10_000_000_000  # beyond 2^31, as real ids are
    MAX_ATTEMPTS = 4  # job ids (run id × 100 + attempt × 20 + position) leave room for four

    def __init__(
        self, repository: str, scenario: Scenario, seed: int, base_time: float, repo_index: int = 0
    ) -> None:
        self.repository = repository
        self.scenario = scenario
        self.seed = seed
        self.base_time = base_time
        self.repo_index = repo_index
        self._runs: dict[int, SimRun] = {}
        self._lock = threading.Lock()

    def created_at(self, index: int) -> float:
        rng = rng_for(self.seed, self.repository, "created", index)
        return math.floor(
            self.base_time
            + index * self.scenario.run_interval
            + rng.uniform(0, self.scenario.run_interval * 0.2)
        )

    def runs_until(self, t: float) -> list[SimRun]:
        """Runs created at or before t, oldest first."""
        runs = []
        index = 0
        while self.created_at(index) <= t:
            runs.append(self.run(index))
            index += 1
        return runs

    def run(self, index: int) -> SimRun:
        with self._lock:
            found = self._runs.get(index)
            if found is None:
                found = self._generate(index)
                self._runs[index] = found
            return found

    def _generate(self, index: int) -> SimRun:
        scenario = self.scenario
        rng = rng_for(self.seed, self.repository, "run", index)
        created = self.created_at(index)
        if rng.random() < scenario.pr_rate:
            branch, event = f"feature/change-{index % 7}", "pull_request"
        else:
            branch, event = "main", "push"
        specs = scenario.jobs_for(index)
        text = workflow_yaml(scenario, specs)
        run_id = self.RUN_ID_BASE + self.repo_index * 100_000_000 + index * 7
        run = SimRun(
            repository=self.repository,
            index=index,
            id=run_id,
            run_number=index + 1,
            created_at=created,
            branch=branch,
            event=event,
            head_sha=hashlib.sha1(f"{self.repository}:{self.seed}:{index}".encode()).hexdigest(),
            workflow_text=text,
            workflow=scenario.workflow_of(index)[0],
            workflow_path=scenario.workflow_of(index)[1],
            list_lag=self._list_lag(index),
            failing_cases=self._failing_cases(index),
        )
        fails = rng.random() < scenario.failure_rate
        first = self._schedule(
            run, specs, 1, created, rng=rng, fail_job="test-suite" if fails else None
        )
        run.attempts.append(first)
        if fails and rng.random() < scenario.rerun_rate:
            start = math.floor(first.end + rng.uniform(60, 300))
            run.attempts.append(self._schedule(run, specs, 2, start, rng=rng, fail_job=None))
        return run

    def _list_lag(self, index: int) -> float:
        if self.scenario.list_lag <= 0:
            return 0.0
        # Its own random stream, so a lag leaves every other draw of the run unchanged.
        rng = rng_for(self.seed, self.repository, "list-lag", index)
        return float(round(rng.uniform(0, self.scenario.list_lag)))

    def _failing_cases(self, index: int) -> tuple[tuple[str, int], ...]:
        flaky = self.scenario.flaky_cases
        if not flaky:
            return (("pages", 0),)
        # Its own random stream: the run's other draws stay as they are.
        rng = rng_for(self.seed, self.repository, "flaky", index)
        return tuple(sorted(rng.sample(flaky, k=min(len(flaky), rng.randint(1, 2)))))

    def rerun(self, run: SimRun, at: float) -> SimAttempt:
        """Re-run all jobs of a completed run at simulated time `at`, however long after its
        creation: the run keeps its created_at, the new attempt (number + 1) gets new timestamps
        and succeeds."""
        with self._lock:
            last = run.attempts[-1]
            if at < last.end:
                raise ValueError(f"run {run.id} attempt {last.number} is not completed at {at}")
            if last.number >= self.MAX_ATTEMPTS:
                raise ValueError(f"run {run.id} already has {last.number} attempts")
            number = last.number + 1
            rng = rng_for(self.seed, self.repository, "rerun", run.index, number)
            specs = self.scenario.jobs_for(run.index)
            attempt = self._schedule(run, specs, number, math.floor(at), rng=rng, fail_job=None)
            run.attempts.append(attempt)
            return attempt

    def _schedule(
        self,
        run: SimRun,
        specs: tuple[JobSpec, ...],
        number: int,
        t0: float,
        *,
        rng: random.Random,
        fail_job: str | None,
    ) -> SimAttempt:
        done: dict[str, SimJob] = {}
        gate: dict[str, str | None] = {}
        used_ends: set[float] = set()
        for position, spec in enumerate(_topological(specs)):
            job_id = run.id * 100 + number * 20 + position
            deps = [done[n] for n in spec.needs]
            ready = max((d.completed_at for d in deps), default=t0 + rng.randint(2, 6))
            gating = max(deps, key=lambda d: d.completed_at) if deps else None
            gate[spec.id] = gating.spec_id if gating else None
            if any(d.conclusion in ("failure", "skipped") for d in deps):
                done[spec.id] = SimJob(
                    job_id,
                    spec.display_name,
                    spec.id,
                    spec.runner,
                    ready,
                    ready,
                    ready,
                    "skipped",
                    [],
                )
                continue
            low, high = spec.queue or self.scenario.queue_range
            started = ready + round(rng.uniform(low, high))
            failed_at: int | None = None
            if spec.id == fail_job:
                failed_at = max(range(len(spec.steps)), key=lambda i: spec.steps[i].seconds)
            steps, t = self._steps(spec, float(started), rng, failed_at)
            # Distinct completion times make the critical path and the last job unambiguous.
            while t in used_ends:
                t += 1
                final = next(s for s in reversed(steps) if s.completed_at is not None)
                final.completed_at = t
            used_ends.add(t)
            done[spec.id] = SimJob(
                job_id,
                spec.display_name,
                spec.id,
                spec.runner,
                float(ready),
                float(started),
                t,
                "failure" if failed_at is not None else "success",
                steps,
            )
        jobs = list(done.values())
        conclusion = "failure" if any(j.conclusion == "failure" for j in jobs) else "success"
        return SimAttempt(number, float(t0), jobs, conclusion, _critical_path(jobs, gate))

    def _steps(
        self, spec: JobSpec, started: float, rng: random.Random, failed_at: int | None
    ) -> tuple[list[SimStep], float]:
        """A job's steps from `started`, the one at `failed_at` failing (the rest skipped), and
        when the last one ended."""
        t = started
        steps: list[SimStep] = []
        for i, step in enumerate(spec.steps):
            number = (
                i + 1
                if not step.name.startswith("Post ") and step.name != "Complete job"
                else i + 10
            )
            if failed_at is not None and i > failed_at and step.name != "Complete job":
                steps.append(SimStep(step.name, number, "skipped", None, None))
                continue
            seconds = max(0, round(step.seconds * math.exp(rng.gauss(0, self.scenario.noise))))
            if failed_at is not None and i == failed_at:
                seconds = max(1, seconds // 3)
            conclusion = "failure" if failed_at == i else "success"
            steps.append(SimStep(step.name, number, conclusion, t, t + seconds))
            t += seconds
        return steps, t


def _critical_path(jobs: list[SimJob], gate: dict[str, str | None]) -> list[str]:
    """From the last job to finish back through each job's latest-finishing need."""
    ran = [j for j in jobs if j.conclusion != "skipped"]
    last = max(ran, key=lambda j: j.completed_at)
    path = [last.spec_id]
    while gate.get(path[-1]):
        path.append(str(gate[path[-1]]))
    names = {j.spec_id: j.name for j in jobs}
    return [names[s] for s in reversed(path)]
