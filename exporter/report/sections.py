"""Each section of the report, computed from a period's samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from exporter import metrics as m
from exporter.report import hints
from exporter.report.inputs import Period, ReportInput
from exporter.report.model import (
    Backend,
    Bar,
    Cache,
    CacheUsage,
    Cost,
    FlakyTest,
    Headline,
    HitRatio,
    Image,
    Images,
    ImageSet,
    PathBar,
    PathJob,
    Restores,
    Suite,
    Tests,
    Trend,
    Week,
)
from exporter.report.samples import Hist, Samples

MONTH = 30 * 86400.0
SUCCESS = "success"
# Steps GitHub adds to every job: not the job's own work.
GITHUB_STEPS = ("Set up job", "Complete job")
Bounds = tuple[float, float]


def pipelines(samples: Samples) -> list[tuple[str, str]]:
    """(repository, workflow) with runs: those with a target first, then by runs."""
    counts: dict[tuple[str, str], float] = {}
    for labels, hist in samples.hists.get(m.RUN_DURATION.name, ()):
        key = (labels.get("repository", ""), labels.get("workflow", ""))
        counts[key] = counts.get(key, 0.0) + hist.count
    targeted = {
        (labels.get("repository", ""), labels.get("workflow", ""))
        for labels, _ in samples.values.get(m.TARGET.name, ())
    }
    found = [key for key, count in counts.items() if count > 0]
    return sorted(found, key=lambda k: (k not in targeted, -counts[k], k))


def target_of(
    samples: Samples, repo: str, workflow: str
) -> tuple[str | None, Bounds | None, Bounds | None]:
    """The branch with a target (the one with most successful runs), its target and baseline."""
    targets = samples.value_by(
        m.TARGET.name, ("branch", "bound"), repository=repo, workflow=workflow
    )
    branches = sorted({branch for branch, _ in targets})
    if not branches:
        return None, None, None

    def runs(branch: str) -> float:
        return samples.hist(
            m.RUN_DURATION.name, repository=repo, workflow=workflow, branch=branch, result=SUCCESS
        ).count

    branch = max(branches, key=lambda b: (runs(b), b == "main"))
    baselines = samples.value_by(
        m.BASELINE.name, ("bound",), repository=repo, workflow=workflow, branch=branch
    )
    target = (targets.get((branch, "lower"), 0.0), targets.get((branch, "upper"), 0.0))
    baseline = None
    if ("upper",) in baselines:
        baseline = (baselines.get(("lower",), 0.0), baselines[("upper",)])
    return branch, target, baseline


def headline(samples: Samples, repo: str, workflow: str) -> Headline:
    branch, target, baseline = target_of(samples, repo, workflow)
    scope = {"repository": repo, "workflow": workflow, "branch": branch}
    ok = samples.hist(m.RUN_DURATION.name, result=SUCCESS, **scope)
    every = samples.hist(m.RUN_DURATION.name, **scope)
    latest = samples.value_by(
        m.RUN_LAST_DURATION.name, ("branch",), repository=repo, workflow=workflow
    )
    pick = branch if branch is not None else ("main" if ("main",) in latest else None)
    found = Headline(
        branch=branch,
        runs=int(ok.count),
        all_runs=int(every.count),
        p50=ok.quantile(0.5),
        p90=ok.quantile(0.9),
        p50_bucket=ok.bucket(0.5),
        latest=latest.get((pick,)) if pick else next(iter(latest.values()), None),
        target=target,
        baseline=baseline,
        hint=None if target else hints.TARGET,
    )
    if target is not None and ok.count:
        found.within_share = ok.at(target[1]) / ok.count
        found.target_met = found.p50 is not None and found.p50 <= target[1]
        if baseline is not None and found.p50 is not None and baseline[1] > target[1]:
            progress = (baseline[1] - found.p50) / (baseline[1] - target[1])
            found.progress = min(1.0, max(0.0, progress))
    if target is not None and baseline is None:
        found.hint = hints.BASELINE
    return found


def job_mean(samples: Samples, repo: str, workflow: str, job: str) -> float | None:
    """A job's mean execution time over its successful runs: exact (sum ÷ count), where the job
    histogram's buckets (30 s to an hour) would make a median coarse."""
    return samples.hist(
        m.JOB_DURATION.name, repository=repo, workflow=workflow, job_name=job, result=SUCCESS
    ).mean


def job_means(samples: Samples, repo: str, workflow: str) -> dict[str, float]:
    by_job = samples.hist_by(
        m.JOB_DURATION.name, "job_name", repository=repo, workflow=workflow, result=SUCCESS
    )
    return {job: mean for job, hist in by_job.items() if (mean := hist.mean) is not None}


def latest_path(samples: Samples, repo: str, workflow: str, branch: str | None) -> dict[str, float]:
    """The latest successful run's critical-path jobs (name → seconds), of `branch` if it has one,
    else of main, else of the branch with the longest path."""
    found = samples.value_by(
        m.RUN_LAST_CRITICAL_PATH_JOB.name,
        ("branch", "job_name"),
        repository=repo,
        workflow=workflow,
    )
    by_branch: dict[str, dict[str, float]] = {}
    for (b, job), seconds in found.items():
        by_branch.setdefault(b, {})[job] = seconds
    for choice in (branch, "main"):
        if choice in by_branch:
            return by_branch[choice]
    return max(by_branch.values(), key=len, default={})


def path_bar(
    period: Period,
    label: str,
    pipeline: tuple[str, str, str | None],
    *,
    order: Callable[[Sequence[str]], list[str]],
    fallback: Sequence[str] = (),
) -> PathBar | None:
    """One period's critical-path jobs with their means; `pipeline` is (repository, workflow,
    branch); `fallback` names the jobs when the period has no latest path of its own."""
    repo, workflow, branch = pipeline
    samples = period.samples
    path = latest_path(samples, repo, workflow, branch)
    names = order(list(path) or [j for j in fallback if job_mean(samples, repo, workflow, j)])
    cp = samples.hist(m.RUN_CRITICAL_PATH.name, repository=repo, workflow=workflow, branch=branch)
    jobs = [
        PathJob(name, job_mean(samples, repo, workflow, name), path.get(name)) for name in names
    ]
    if not jobs and not cp.count:
        return None
    return PathBar(label, jobs, cp.mean, period.start, period.end)


def own_steps(
    samples: Samples, repo: str, workflow: str, job: str
) -> tuple[list[Bar], float | None]:
    """The job's steps by mean seconds (successful steps; GitHub's set-up and completion steps
    included: they are part of the job's time), slowest first, with their share of the job."""
    job_mean = samples.hist(
        m.JOB_DURATION.name, repository=repo, workflow=workflow, job_name=job, result=SUCCESS
    ).mean
    steps = samples.hist_by(
        m.STEP_DURATION.name,
        "step",
        repository=repo,
        workflow=workflow,
        job_name=job,
        result=SUCCESS,
    )
    bars = [
        Bar(step, hist.mean or 0.0, (hist.mean or 0.0) / job_mean if job_mean else None)
        for step, hist in steps.items()
        if hist.count
    ]
    return sorted(bars, key=lambda b: (-b.seconds, b.name)), job_mean


def instructions(
    samples: Samples, repo: str, workflow: str, job: str, job_mean: float | None
) -> list[Bar]:
    """Executed Dockerfile instructions by seconds per run of the job, slowest first."""
    scope = {"repository": repo, "workflow": workflow, "job_name": job}
    builds = samples.hist(m.BUILDKIT_BUILD.name, **scope).count
    runs = samples.hist(m.JOB_DURATION.name, **scope).count
    if not builds or not runs:
        return []
    bars = []
    for labels, hist in samples.hists.get(m.BUILDKIT_STEP_DURATION.name, ()):
        if any(labels.get(k) != v for k, v in scope.items()):
            continue
        per_run = hist.sum / runs
        name = f"[{labels.get('stage', '')}] {labels.get('instruction', '')}"
        detail = f"{int(hist.count)} executions in {int(builds)} builds of {int(runs)} runs"
        bars.append(Bar(name, per_run, per_run / job_mean if job_mean else None, detail))
    return sorted(bars, key=lambda b: (-b.seconds, b.name))


def cache(samples: Samples, repo: str, workflow: str) -> Cache:
    scope = {"repository": repo, "workflow": workflow}
    builds = samples.hist_by(m.BUILDKIT_BUILD.name, "cache_backend", **scope)
    imports = samples.hist_by(m.BUILDKIT_IMPORT.name, "cache_backend", **scope)
    exports = samples.hist_by(m.BUILDKIT_EXPORT.name, "cache_backend", **scope)
    backends = [
        Backend(
            name, int(hist.count), imports.get(name, Hist()).mean, exports.get(name, Hist()).mean
        )
        for name, hist in sorted(builds.items())
        if hist.count
    ]
    steps = samples.value_by(m.BUILDKIT_STEPS.name, ("job_name", "result"), **scope)
    latest = samples.value_by(m.BUILDKIT_HIT_RATIO.name, ("job_name",), **scope)
    ratios = []
    for job in sorted({j for j, _ in steps} | {j for (j,) in latest}):
        cached, executed = int(steps.get((job, "cached"), 0)), int(steps.get((job, "executed"), 0))
        ratio = cached / (cached + executed) if cached + executed else None
        ratios.append(HitRatio(job, cached, executed, ratio, latest.get((job,))))
    found = Cache(backends, ratios, restores(samples, repo, workflow), usage(samples, repo))
    if not backends and not ratios and not found.restores:
        found.hint = hints.CACHE
    if found.usage is None:
        found.usage_hint = hints.CACHE_USAGE
    return found


def restores(samples: Samples, repo: str, workflow: str) -> list[Restores]:
    counts = samples.value_by(
        m.CACHE_RESTORES.name, ("job_name", "result"), repository=repo, workflow=workflow
    )
    seconds = samples.hist_by(
        m.CACHE_RESTORE_SECONDS.name, "job_name", repository=repo, workflow=workflow
    )
    jobs = sorted({job for job, _ in counts})
    return [
        Restores(
            job,
            int(counts.get((job, "hit"), 0)),
            int(counts.get((job, "miss"), 0)),
            seconds.get(job, Hist()).mean,
        )
        for job in jobs
    ]


def usage(samples: Samples, repo: str) -> CacheUsage | None:
    used = samples.value(m.CACHE_USAGE.name, repository=repo)
    if used is None:
        return None
    kinds = samples.value_by(m.CACHE_KIND_BYTES.name, ("kind",), repository=repo)
    return CacheUsage(
        repo,
        used,
        samples.value(m.CACHE_LIMIT.name, repository=repo),
        samples.value(m.CACHE_ENTRIES.name, repository=repo),
        kinds.get(("buildkit",)),
        kinds.get(("other",)),
    )


def images(samples: Samples) -> Images:
    keys = ("registry", "image", "tag", "platform")
    layers = samples.value_by(m.IMAGE_LAYERS.name, keys)
    found = []
    for labels, size in samples.values.get(m.IMAGE_SIZE.name, ()):
        # Prometheus drops empty label values: a missing one is "".
        registry, image, tag, platform = (labels.get(name, "") for name in keys)
        key = (registry, image, tag, platform)
        found.append(Image(registry, image, tag, platform, size, _int(layers.get(key))))
    sets = samples.value_by(m.IMAGE_SET_SIZE.name, ("set", "kind"))
    names = sorted({name for name, _ in sets})
    image_sets = [
        ImageSet(n, sets.get((n, "total"), 0.0), sets.get((n, "unique"), 0.0)) for n in names
    ]
    found.sort(key=lambda i: (-i.bytes, i.image, i.tag, i.platform))
    return Images(found, image_sets, None if found or image_sets else hints.IMAGES)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def tests(samples: Samples, repo: str, workflow: str) -> Tests:
    scope = {"repository": repo, "workflow": workflow}
    durations = samples.hist_by(m.TEST_SUITE_DURATION.name, "suite", **scope)
    latest = samples.value_by(m.TEST_SUITE_LAST.name, ("suite",), **scope)
    cases = samples.value_by(m.TEST_CASES.name, ("suite", "result"), **scope)
    names = sorted(set(durations) | {s for (s,) in latest} | {s for s, _ in cases})
    if not names:
        return Tests(hint=hints.TESTS)
    means = {name: durations.get(name, Hist()).mean for name in names}
    total = sum(v for v in means.values() if v is not None)
    suites = [
        Suite(
            name,
            int(durations.get(name, Hist()).count),
            means[name],
            latest.get((name,)),
            (means[name] or 0.0) / total if total else None,
            int(cases.get((name, "passed"), 0)),
            int(cases.get((name, "failed"), 0) + cases.get((name, "error"), 0)),
            int(cases.get((name, "skipped"), 0)),
        )
        for name in names
    ]
    suites.sort(key=lambda s: (-(s.mean or 0.0), s.name))
    return Tests(suites, total or None)


TOP_FLAKY = 10


def add_flaky(tests: Tests, source: ReportInput, repo: str, workflow: str) -> None:
    """The pipeline's costliest flaky cases (from the state store's history)."""
    if source.kind != "store":
        tests.flaky_hint = hints.FLAKY_PROMETHEUS
        return
    cases = [c for c in source.flaky if c.repository == repo and c.workflow == workflow]
    tests.flaky = [
        FlakyTest(
            suite=c.suite,
            case=f"{c.classname}.{c.name}" if c.classname else c.name,
            occurrences=c.flaky,
            runs=c.runs,
            rerun_seconds=c.rerun_seconds,
            last_seen=c.last_seen,
        )
        for c in cases[:TOP_FLAKY]
    ]
    if not tests.flaky:
        tests.flaky_hint = hints.FLAKY


def cost(now: Period, baseline: Period | None, repo: str, workflow: str, head: Headline) -> Cost:
    """Runner minutes: every job's execution time over every run (all branches and results)."""
    runner = _runner_minutes(now.samples, repo, workflow)
    runs = int(now.samples.hist(m.RUN_DURATION.name, repository=repo, workflow=workflow).count)
    found = Cost(runs, runner / runs if runs else None)
    if head.baseline is not None and head.p50 is not None:
        found.saved_minutes_per_run = (head.baseline[1] - head.p50) / 60
    window = now.seconds
    if not window:
        found.month_hint = hints.MONTH
        return found
    scale = MONTH / window
    found.runs_per_month = runs * scale
    found.runner_minutes_per_month = runner * scale
    if found.saved_minutes_per_run is not None:
        branch_runs = now.samples.hist(
            m.RUN_DURATION.name, repository=repo, workflow=workflow, branch=head.branch
        ).count
        found.saved_minutes_per_month = found.saved_minutes_per_run * branch_runs * scale
    if baseline is not None and found.runner_minutes_per_run is not None:
        before_runs = baseline.samples.hist(
            m.RUN_DURATION.name, repository=repo, workflow=workflow
        ).count
        if before_runs:
            before = _runner_minutes(baseline.samples, repo, workflow) / before_runs
            found.runner_minutes_saved_per_month = (
                (before - found.runner_minutes_per_run) * runs * scale
            )
    return found


def _runner_minutes(samples: Samples, repo: str, workflow: str) -> float:
    return samples.hist(m.JOB_DURATION.name, repository=repo, workflow=workflow).sum / 60


def trend(weeks: Sequence[Period], repo: str, workflow: str, head: Headline, kind: str) -> Trend:
    if not weeks:
        return Trend(hint=hints.TREND if kind == "store" else hints.TREND_SHORT)
    found = []
    for week in weeks:
        hist = week.samples.hist(
            m.RUN_DURATION.name,
            repository=repo,
            workflow=workflow,
            branch=head.branch,
            result=SUCCESS,
        )
        assert week.start is not None
        assert week.end is not None
        found.append(
            Week(week.start, week.end, int(hist.count), hist.quantile(0.5), hist.quantile(0.9))
        )
    return Trend(found, head.target, head.baseline)
