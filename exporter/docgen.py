"""Generates docs/metrics.md from exporter/metrics.py: `python -m exporter.docgen [--check]`."""

from __future__ import annotations

import sys
from pathlib import Path

from exporter import metrics as m

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def render() -> str:
    lines = [
        "# Metrics",
        "",
        "Generated from `exporter/metrics.py` by `make docs` (`python -m exporter.docgen`); a test",
        "fails when this file is stale. Histogram buckets are in seconds; run and critical-path",
        "histograms also get every configured target and baseline bound.",
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
                extra = " + target and baseline bounds" if spec.target_buckets else ""
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


# What one repository costs, per metric: (spec, label sets as a formula, the example's label sets).
COST: tuple[tuple[m.MetricSpec, str, int], ...] = (
    (m.RUN_DURATION, "W × B × E × R", 2),
    (m.RUN_CRITICAL_PATH, "W × B", 2),
    (m.RUN_LAST_DURATION, "W × B", 2),
    (m.RUN_LAST_CRITICAL_PATH_JOB, "W × B × P", 2 * 5),
    (m.RUN_ACTIVE, "W × 2", 2),
    (m.RUN_CRITICAL_PATH_SOURCE, "W (× 2 when some runs fall back to timestamps)", 1),
    (m.RUN_TARGET, "targets × 2", 2),
    (m.JOB_DURATION, "W × J × R", 8),
    (m.JOB_QUEUE, "W × Q", 1),
    (m.JOB_LAST_DURATION, "W × B × J", 2 * 8),
    (m.STEP_DURATION, "W × J × S × R", 8 * 6),
    (m.STEP_LAST_DURATION, "W × J × S", 8 * 6),
    (m.STEP_DISTRIBUTION, "W × H × S × R", 0),
    (m.RUNS_OBSERVED, "1", 1),
)
# Per GitHub source (the repository): up, last success, poll interval, and the poll histogram.
_PER_SOURCE = 3 + m.POLL_DURATION.samples_per_series()


def cost_section() -> list[str]:
    lines = [
        "## What a repository costs",
        "",
        "Samples in the exposition per repository, by metric, with the defaults (a configured",
        "target adds up to 4 buckets to the run histogram and 2 series of target gauges). W",
        "workflows, B branch labels (the `branches` that occur, plus `other`), E events per branch, R",
        "results per job (mostly 1), J jobs, S steps per job (GitHub adds *Set up job* and *Complete",
        "job*), Q runner label sets, P jobs on the critical path, H jobs in `metrics.step_histograms`.",
        "The example column is one CI workflow of 8 jobs × 4 steps on two branches (main pushes and",
        "pull requests), a target, all green — the `org` scenario of `bench/series.py`.",
        "",
        "| metric | label sets | samples each | example: samples |",
        "|---|---|---|---|",
    ]
    total = 0
    for spec, formula, sets in COST:
        extra = 3 if spec.target_buckets else 0  # a target's bounds not already buckets
        each = spec.samples_per_series(extra)
        total += sets * each
        lines.append(f"| `{spec.name}` | {formula} | {each} | {sets * each} |")
    total += _PER_SOURCE + 2
    lines += [
        f"| the exporter's own, per source (`up`, last success, interval, poll duration) | 1 | {_PER_SOURCE} | {_PER_SOURCE} |",
        "| targets and baselines | 2 per target bound set | 1 | 2 |",
        f"| **total** | | | **{total}** |",
        "",
        "Optional families add to that: job logs (`logs.jobs`) about 20 samples per build job,",
        "JUnit (`junit.artifacts`) `suite_depth` apps × (13 + 4 results + 2 for flaky tests) + 2",
        "(re-runs after a failure, the flaky history's size), images 2 per tag and platform.",
        "Steps dominate: a step costs 3 samples (2 for its average, 1 for its latest",
        f"value), or {3 + m.STEP_DISTRIBUTION.samples_per_series()} when its job is in `metrics.step_histograms`. "
        "A label set not updated for `limits.series_ttl` (14 days) expires.",
        "",
    ]
    return lines


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
