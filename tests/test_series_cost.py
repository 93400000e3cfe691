"""docs/metrics.md "What a repository costs" against what `once` exports: the example column for
the `org` scenario, and the formulas (label sets from the simulator's truth, the test's own
arithmetic, times the documented samples each) for a repository with a target, job logs, JUnit
and the Actions cache."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

from exporter import docgen
from exporter import metrics as m
from simulator.github import GitHubSimulator
from tests.helpers import (
    TOKEN,
    Exposition,
    expected_from_truth,
    run_cli,
    write_config,
)
from tests.schemas import validated_simulator

REPOSITORY = "acme/webapp"
# Sample name → metric, for the families a repository has.
_SAMPLE_METRIC = {name: spec.name for spec in m.ALL_METRICS for name in spec.series_names()}


def samples_per_metric(text: str, repository: str) -> Counter[str]:
    """Samples of one repository (its `repository` label, or its source's), by metric."""
    found: Counter[str] = Counter()
    for name, labels in Exposition.parse(text).samples:
        values = dict(labels)
        if values.get("repository") == repository or values.get("source") == f"github:{repository}":
            found[_SAMPLE_METRIC[name]] += 1
    return found


def _once(config: Path) -> str:
    result = run_cli("once", "--config", str(config), env={"TEST_GITHUB_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_documented_example_is_what_once_exports(tmp_path: Path) -> None:
    """One repository of the `org` scenario (one CI workflow of 8 jobs × 4 steps, main pushes and
    pull requests, all green) with the defaults: each metric's samples are the example column,
    no other metric has samples, and the total is the documented one."""
    with validated_simulator("org", seed=1, repositories=(REPOSITORY,), token=TOKEN) as sim:
        config = tmp_path / "config.yaml"
        github = {
            "api_url": sim.url,
            "token_env": "TEST_GITHUB_TOKEN",
            "lookback": "2d",
            "repositories": [{"name": REPOSITORY}],
        }
        state = {"path": str(tmp_path / "state.db")}
        config.write_text(yaml.safe_dump({"state": state, "github": github}))
        found = samples_per_metric(_once(config), REPOSITORY)
    documented = {c.spec.name: c.example * c.each for c in docgen.REPOSITORY if c.example}
    assert dict(found) == documented
    assert sum(found.values()) == docgen.example_total()


def _branch(branch: str) -> str:
    return branch if branch == "main" else "other"


def _latest(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return max(attempts, key=lambda a: max(j["completed_at"] for j in a["jobs"]))


def _core_sets(truth: dict[str, Any]) -> dict[str, int]:
    """Label sets of the pipeline metrics, as the formulas define them, from the truth."""
    expected = expected_from_truth(truth)
    attempts = truth["attempts"]
    branches = {_branch(a["branch"]) for a in attempts}
    latest_path = 0
    for branch in branches:
        green = [
            a for a in attempts if _branch(a["branch"]) == branch and a["conclusion"] == "success"
        ]
        latest_path += len(set(_latest(green)["critical_path"])) if green else 0
    return {
        m.RUN_DURATION.name: len(expected["run"].count),
        m.RUN_CRITICAL_PATH.name: len(expected["critical"].count),
        m.RUN_LAST_DURATION.name: len(branches),
        m.RUN_LAST_CRITICAL_PATH_JOB.name: latest_path,
        m.RUN_ACTIVE.name: 2,
        m.RUN_CRITICAL_PATH_SOURCE.name: 1,
        m.JOB_DURATION.name: len(expected["job"].count),
        m.JOB_QUEUE.name: len(expected["queue"].count),
        m.JOB_LAST_DURATION.name: len(
            {(_branch(a["branch"]), j["name"]) for a in attempts for j in a["jobs"]}
        ),
        m.STEP_DURATION.name: len(expected["step"].count),
        m.STEP_LAST_DURATION.name: len(
            {(j["name"], s["name"]) for a in attempts for j in a["jobs"] for s in j["steps"]}
        ),
        m.RUNS_OBSERVED.name: 1,
        m.CACHE_USAGE.name: 1,
        m.CACHE_ENTRIES.name: 1,
        m.CACHE_LIMIT.name: 1,
        m.CACHE_KIND_BYTES.name: 2,
        m.UP.name: 1,
        m.LAST_SUCCESS.name: 1,
        m.POLL_INTERVAL.name: 1,
        m.POLL_DURATION.name: 1,
    }


def _add_build(sets: dict[str, set[tuple[str, ...]]], job: str, build: dict[str, Any]) -> None:
    scope = (job, build["backend"])
    sets[m.BUILDKIT_BUILD.name].add(scope)
    if build["import_seconds"] is not None:
        sets[m.BUILDKIT_IMPORT.name].add(scope)
    if build["export_seconds"] is not None:
        sets[m.BUILDKIT_EXPORT.name].add(scope)
    sets[m.BUILDKIT_STEPS.name].update((job, r) for r in ("cached", "executed") if build[r])
    if build["cached"] + build["executed"]:
        sets[m.BUILDKIT_HIT_RATIO.name].add((job,))
    for i in build["instructions"]:
        sets[m.BUILDKIT_STEP_DURATION.name].add((job, i["stage"], i["instruction"]))


def _log_sets(truth: dict[str, Any], prefix: str) -> dict[str, int]:
    """Label sets of the job-log metrics (jobs whose name starts with `prefix`)."""
    sets: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    logs = [log for a in truth["attempts"] for log in a["logs"] if log["job"].startswith(prefix)]
    for log in logs:
        for build in log["builds"]:
            _add_build(sets, log["job"], build)
        for restore in log["restores"]:
            sets[m.CACHE_RESTORES.name].add((log["job"], restore["result"]))
            sets[m.CACHE_RESTORE_SECONDS.name].add((log["job"],))
    return {name: len(found) for name, found in sets.items()}


def _suite_sets(truth: dict[str, Any]) -> dict[str, int]:
    """Label sets of the JUnit metrics: every suite seen, the latest report's, results, and the
    flaky-test counters (every suite seen; re-runs per workflow; the history's size)."""
    reported = [a for a in truth["attempts"] if a["junit"]]
    suites = {s for a in reported for s in a["junit"]}
    results = {
        (s, r)
        for a in reported
        for s, totals in a["junit"].items()
        for r in ("passed", "failed", "error", "skipped")
        if totals[r]
    }
    return {
        m.TEST_SUITE_DURATION.name: len(suites),
        m.TEST_SUITE_LAST.name: len(_latest(reported)["junit"]),
        m.TEST_CASES.name: len(results),
        m.TEST_CASE_FLAKY.name: len(suites),
        m.TEST_SUITE_FLAKY_CASES.name: len(suites),
        m.TEST_RERUNS.name: 1,  # one workflow
        m.TEST_CASES_HELD.name: 1,
    }


def _target_sets(truth: dict[str, Any], upper: float) -> dict[str, int]:
    """Target and baseline gauges, and the outcomes of the main branch's successful runs."""
    outcomes = {"within" if wall <= upper else "above" for wall in _wall_times(truth)}
    return {m.TARGET.name: 2, m.BASELINE.name: 2, m.RUN_TARGET.name: len(outcomes)}


def _wall_times(truth: dict[str, Any]) -> list[float]:
    """Wall time of each successful run attempt on main (first job start to last job end)."""
    out = []
    for attempt in truth["attempts"]:
        if attempt["branch"] != "main" or attempt["conclusion"] != "success":
            continue
        ran = [j for j in attempt["jobs"] if j["conclusion"] != "skipped"]
        out.append(max(j["completed_at"] for j in ran) - min(j["started_at"] for j in ran))
    return out


def test_the_documented_formulas_are_what_once_exports(
    sim: GitHubSimulator, tmp_path: Path
) -> None:
    """The `seed` scenario (failures, re-runs, pull requests) with a target and baseline on main,
    the build jobs' logs and the JUnit reports: each metric's samples are its label sets (from
    the truth) times the documented samples each, plus T = 3 target and baseline bounds (720,
    1380, 1620 s; 600 is a bucket) on main's run and critical-path series only."""
    extra = {"logs": {"jobs": ["build*"]}, "junit": {"artifacts": ["junit*"]}}
    config = write_config(
        tmp_path / "config.yaml", sim.url, state=tmp_path / "state.db", repo_extra=extra
    )
    found = samples_per_metric(_once(config), REPOSITORY)
    truth = sim.truth()
    sets = {
        **_core_sets(truth),
        **_log_sets(truth, "build"),
        **_suite_sets(truth),
        **_target_sets(truth, upper=720),
    }
    costs = {c.spec.name: c for c in (*docgen.REPOSITORY, *docgen.TARGET)}
    costs |= {c.spec.name: c for c in (*docgen.BUILD_JOB, *docgen.SUITE, *docgen.JUNIT)}
    expected = {name: n * costs[name].each for name, n in sets.items() if n}
    # T = 3 more samples on each of main's run-duration and critical-path series.
    run = expected_from_truth(truth)
    for name, key in ((m.RUN_DURATION.name, "run"), (m.RUN_CRITICAL_PATH.name, "critical")):
        expected[name] += 3 * sum(1 for labels in run[key].count if labels[1] == "main")
    assert dict(found) == expected


def test_workflows_beyond_the_limit_fold_into_other(tmp_path: Path) -> None:
    """`limits.max_workflows: 2` on a repository with 5 workflows: a target's workflow always
    keeps its name, the first 2 others seen keep theirs (also after a restart, with new runs),
    the rest are `other`, each folded name counted once per process."""
    with validated_simulator("bench", seed=1, repositories=(REPOSITORY,), token=TOKEN) as sim:
        config = tmp_path / "config.yaml"
        github = {
            "api_url": sim.url,
            "token_env": "TEST_GITHUB_TOKEN",
            "lookback": "2d",
            "clock_skew": "2d",
            "repositories": [{"name": REPOSITORY}],
        }
        target = {
            "repository": REPOSITORY,
            "workflow": "CI-4",
            "branch": "main",
            "target": {"lower": "10m", "upper": "12m"},
        }
        state = {"path": str(tmp_path / "state.db")}
        limits = {"max_workflows": 2}
        config.write_text(
            yaml.safe_dump(
                {"state": state, "github": github, "targets": [target], "limits": limits}
            )
        )
        first = Exposition.parse(_once(config))
        runs = "cicd_pipeline_run_duration_seconds_count"
        named = set(first.by(runs, "workflow")) - {("other",)}
        assert ("CI-4",) in named
        assert len(named) == 3
        assert first.by(runs, "workflow")[("other",)] > 0
        assert first.total("ci_pipeline_exporter_poll_errors_total", reason="workflow_folded") == 2
        sim.clock.advance(6 * 3600)
        # A run of a folded workflow, re-run before the next poll: attempt 1 is fetched by id,
        # and keeps the folded label too.
        now = sim.clock.now()
        folded = next(
            r
            for r in sim.timelines[REPOSITORY].runs_until(now)
            if (r.workflow,) not in named
            and now - 3 * 3600 < r.created_at
            and r.attempts[-1].end < now
        )
        rerun = sim.rerun(REPOSITORY, folded.id)
        sim.clock.advance(rerun.end + 60 - sim.clock.now())
        second = Exposition.parse(_once(config))
        assert set(second.by(runs, "workflow")) - {("other",)} == named
        assert sum(second.by(runs, "workflow").values()) > sum(first.by(runs, "workflow").values())
