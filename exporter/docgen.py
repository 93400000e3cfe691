"""Generates docs/metrics.md from exporter/metrics.py: `python -m exporter.docgen [--check]`."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from exporter import metrics as m

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def render() -> str:
    lines = [
        "# Metrics",
        "",
        "Generated from `exporter/metrics.py` by `make docs` (`python -m exporter.docgen`); a test",
        "fails when this file is stale. Histogram buckets are in seconds; the run and critical-path",
        "histograms of a (repository, workflow, branch) with a target also get its target and",
        "baseline bounds.",
        "",
    ]
    groups = (
        ("Pipelines, jobs and steps", m.PIPELINE_METRICS),
        ("Build cache and Actions cache (job logs, cache API)", m.BUILD_METRICS),
        ("Tests (JUnit artifacts)", m.TEST_METRICS),
        ("Images (OCI registries)", m.IMAGE_METRICS),
        ("Runner pools (github.runners)", m.WORKER_METRICS),
        ("The exporter itself", m.EXPORTER_METRICS),
    )
    for title, specs in groups:
        lines += [f"## {title}", "", "| metric | type | labels | meaning |", "|---|---|---|---|"]
        for spec in specs:
            labels = ", ".join(f"`{label}`" for label in spec.labels)
            meaning = spec.help.replace("|", "\\|")
            lines.append(f"| `{spec.name}` | {spec.type} | {labels} | {meaning} |")
        lines.append("")
        bucketed = [s for s in specs if s.type == "histogram"]
        if bucketed:
            lines.append("Buckets:")
            lines.append("")
            for spec in bucketed:
                bounds = ", ".join(f"{b:g}" for b in spec.buckets)
                extra = " + the bounds of its target and baseline" if spec.target_buckets else ""
                lines.append(f"- `{spec.name}`: {bounds}{extra}")
            lines.append("")
        folding = [s for s in specs if s.foldable]
        if folding:
            lines.append(
                "Labels folded into `other` when a metric reaches `limits.max_series_per_metric`:"
            )
            lines.append("")
            for spec in folding:
                lines.append(f"- `{spec.name}`: {', '.join(f'`{x}`' for x in spec.foldable)}")
            lines.append("")
    lines += cost_section()
    return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class Cost:
    """One metric's share of what a repository costs: its label sets as a formula, and how many
    the example has (tests/test_series_cost.py checks both against `once`)."""

    spec: m.MetricSpec
    label_sets: str
    example: int = 0

    @property
    def each(self) -> int:
        return self.spec.samples_per_series()


# Every repository: the pipeline metrics, the Actions cache (on by default) and its source's own.
REPOSITORY: tuple[Cost, ...] = (
    Cost(m.RUN_DURATION, "W × B × E × R", 2),
    Cost(m.RUN_CRITICAL_PATH, "W × B (with a successful run)", 2),
    Cost(m.RUN_LAST_DURATION, "W × B", 2),
    Cost(m.RUN_LAST_CRITICAL_PATH_JOB, "W × B × P", 2 * 6),
    Cost(m.RUN_ACTIVE, "W × 2", 2),
    Cost(m.RUN_CRITICAL_PATH_SOURCE, "W (× 2 when some runs fall back to timestamps)", 1),
    Cost(m.JOB_DURATION, "W × J × R", 8),
    Cost(m.JOB_QUEUE, "W × Q", 1),
    Cost(m.JOB_LAST_DURATION, "W × B × J", 2 * 8),
    Cost(m.STEP_DURATION, "W × J × S × R", 8 * 6),
    Cost(m.STEP_LAST_DURATION, "W × J × S", 8 * 6),
    Cost(m.STEP_DISTRIBUTION, "W × H × S × R", 0),
    Cost(m.RUNS_OBSERVED, "1", 1),
    Cost(m.CACHE_USAGE, "1 (`actions_cache.enabled`, the default)", 1),
    Cost(m.CACHE_ENTRIES, "1", 1),
    Cost(m.CACHE_LIMIT, "1", 1),
    Cost(m.CACHE_KIND_BYTES, "2 (buildkit, other)", 2),
    Cost(m.UP, "1 (the source `github:<repository>`)", 1),
    Cost(m.LAST_SUCCESS, "1", 1),
    Cost(m.POLL_INTERVAL, "1", 1),
    Cost(m.POLL_DURATION, "1", 1),
)
# Each target (the example has none).
TARGET: tuple[Cost, ...] = (
    Cost(m.TARGET, "2 (lower, upper)"),
    Cost(m.BASELINE, "2 with a baseline"),
    Cost(m.RUN_TARGET, "up to 2 (within, above)"),
)
# Each job matching logs.jobs whose log has BuildKit output or actions/cache restores.
BUILD_JOB: tuple[Cost, ...] = (
    Cost(m.BUILDKIT_BUILD, "K: cache backends its builds use (mostly 1)"),
    Cost(m.BUILDKIT_IMPORT, "K (builds that import a cache)"),
    Cost(m.BUILDKIT_EXPORT, "K (builds that export a cache)"),
    Cost(m.BUILDKIT_STEPS, "up to 4 (cached, executed, errored, canceled)"),
    Cost(m.BUILDKIT_HIT_RATIO, "1"),
    Cost(m.BUILDKIT_STEP_DURATION, "I: executed (stage, instruction) pairs, ≤ `max_instructions`"),
    Cost(m.CACHE_RESTORES, "up to 2 (hit, miss), when it restores an actions/cache"),
    Cost(m.CACHE_RESTORE_SECONDS, "1, when it restores an actions/cache"),
)
# Each test suite (app) of a workflow's JUnit reports.
SUITE: tuple[Cost, ...] = (
    Cost(m.TEST_SUITE_DURATION, "1"),
    Cost(m.TEST_SUITE_LAST, "1 while in the latest report"),
    Cost(m.TEST_CASES, "up to 4 (passed, failed, error, skipped)"),
    Cost(m.TEST_CASE_FLAKY, "1"),
    Cost(m.TEST_SUITE_FLAKY_CASES, "1"),
)
# Once per workflow / repository with JUnit reports: re-runs and the flaky-test history's size.
JUNIT: tuple[Cost, ...] = (
    Cost(m.TEST_RERUNS, "W (workflows with JUnit reports)"),
    Cost(m.TEST_CASES_HELD, "1"),
    Cost(m.TEST_CASES_DROPPED, "up to 2 (evicted, overflow), once a case was left out"),
)
# With github.webhooks: the live queue.
WEBHOOKS: tuple[Cost, ...] = (
    Cost(m.TASK_ACTIVE, "W × Q × 3 (queued, waiting, executing)"),
    Cost(m.TASK_OLDEST_QUEUED, "Q with a queued job"),
)


def _rows(costs: tuple[Cost, ...], example: bool) -> list[str]:
    lines = []
    for cost in costs:
        each = str(cost.each) + (" + T" if cost.spec.target_buckets else "")
        cells = [f"`{cost.spec.name}`", cost.label_sets, each]
        if example:
            cells.append(str(cost.example * cost.each))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def example_total() -> int:
    return sum(cost.example * cost.each for cost in REPOSITORY)


def _per(costs: tuple[Cost, ...]) -> int:
    """Samples of one unit with every label set that can occur there once."""
    return sum(cost.each for cost in costs)


def cost_section() -> list[str]:
    return [
        "## What a repository costs",
        "",
        "Samples in the exposition per repository, by metric, with the defaults. W workflows, B",
        "branch labels (the `branches` that occur, plus `other`), E events per branch, R results",
        "(mostly 1), J jobs, S steps per job (GitHub adds *Set up job* and *Complete job*), Q runner",
        "label sets, P jobs on the latest successful run's critical path, H jobs in",
        "`metrics.step_histograms`, T the bounds of a target and its baseline on that (workflow,",
        "branch) that are not already buckets (up to 4; only that branch's series get them). The",
        "example is one CI workflow of 8 jobs × 4 steps on two branch labels (main pushes and pull",
        "requests), all green, no target — the `org` scenario of `bench/series.py`.",
        "",
        "| metric | label sets | samples each | example: samples |",
        "|---|---|---|---|",
        *_rows(REPOSITORY, example=True),
        f"| **total** | | | **{example_total()}** |",
        "",
        "A target (`targets`) adds T samples to each run-duration series of its (workflow,",
        "branch) and to its critical-path series, and:",
        "",
        "| metric | label sets | samples each |",
        "|---|---|---|",
        *_rows(TARGET, example=False),
        "",
        *_enrichment_costs(),
    ]


def _enrichment_costs() -> list[str]:
    """What the optional sources add: job logs, JUnit reports, webhooks, images."""
    instruction = m.BUILDKIT_STEP_DURATION.samples_per_series()
    fixed = _per(BUILD_JOB) - instruction
    suite = _per(SUITE) - m.TEST_CASES.samples_per_series() + 4
    return [
        f"Job logs (`logs.jobs`) cost about {fixed} + {instruction} × I samples per build job (I",
        "executed Dockerfile instructions, at most `logs.max_instructions`, 50, then `other`):",
        "",
        "| metric | label sets (per job) | samples each |",
        "|---|---|---|",
        *_rows(BUILD_JOB, example=False),
        "",
        f"JUnit (`junit.artifacts`) costs up to {suite} samples per suite: the suites are the",
        "distinct first `suite_depth` components of the cases' classnames, at most",
        "`junit.max_suites` (100) per workflow, then `other`.",
        "",
        "| metric | label sets (per suite) | samples each |",
        "|---|---|---|",
        *_rows(SUITE, example=False),
        "",
        "and once per workflow or repository with reports:",
        "",
        "| metric | label sets | samples each |",
        "|---|---|---|",
        *_rows(JUNIT, example=False),
        "",
        "Webhooks (`github.webhooks`) add the live queue:",
        "",
        "| metric | label sets | samples each |",
        "|---|---|---|",
        *_rows(WEBHOOKS, example=False),
        "",
        "Images cost 2 samples per tag and platform and 2 per set. Steps dominate: a step costs 3",
        "samples (2 for its average, 1 for its latest value), or "
        f"{3 + m.STEP_DISTRIBUTION.samples_per_series()} when its job is in",
        "`metrics.step_histograms`. A label set not updated for `limits.series_ttl` (14 days)",
        "expires.",
        "",
    ]


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
