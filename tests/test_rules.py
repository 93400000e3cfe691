"""Alert rules: promtool check, and promtool unit tests for every alert — it fires on the case it
exists for and stays silent just inside the boundary. The expected labels and annotations are
written out here (not read from the rules file they check), so the test pins what Alertmanager
will receive."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from grafana.generate import ROOT as GRAFANA
from tests.helpers import require_binary

RULES = GRAFANA / "alerts" / "ci-pipeline.rules.yml"
BASE = {"job": "ci-pipeline-exporter", "instance": "exporter:9469"}


def _alerts() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in document["groups"] for r in g["rules"] if "alert" in r}


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    merged = {**BASE, **labels}
    body = ", ".join(f'{k}="{v}"' for k, v in merged.items())
    return {"series": f"{name}{{{body}}}", "values": values}


RUNBOOK = (
    "https://github.com/ci-pipeline-exporter/ci-pipeline-exporter/blob/main/grafana/runbook.md"
)
GRAFANA_URL = "http://localhost:3000/d"
# alert → (severity, summary, description, dashboard uid); {label} fields are filled per case.
EXPECTED: dict[str, tuple[str, str, str, str]] = {
    "CIPipelineAboveTarget": (
        "warning",
        "CI pipeline {repository} {workflow} ({branch}) is above its target",
        "Fewer than half of the successful runs in the last 6h finished within the target's upper bound.",
        "cipe-pipeline-vs-target",
    ),
    "CIPipelineDurationRegression": (
        "warning",
        "CI pipeline {repository} {workflow} ({branch}) got slower",
        "The median run of the last 24h is more than 1.2× the median of the 7d before.",
        "cipe-pipeline-vs-target",
    ),
    "CIJobDurationRegression": (
        "warning",
        "CI job {job_name} in {repository} {workflow} got slower",
        "The job's median of the last 24h is more than 1.25× its median of the 7d before.",
        "cipe-bottlenecks",
    ),
    "CIJobQueueTimeHigh": (
        "warning",
        "Jobs of {repository} wait for runners",
        "The 90th percentile queue time of jobs asking for {runner_labels} over 1h is above 120 seconds.",
        "cipe-bottlenecks",
    ),
    "CIJobsQueuedTooLong": (
        "warning",
        "Jobs of {repository} wait for a runner with labels {runner_labels}",
        "A job has been queued for more than 15 minutes (live, from workflow_job webhooks); the pool for these labels is short or offline.",
        "cipe-bottlenecks",
    ),
    "CIBuildCacheHitRatioLow": (
        "info",
        "BuildKit cache hits are low for {job_name} in {repository}",
        "Less than 50% of the Dockerfile steps over 6h came from cache.",
        "cipe-build-cache",
    ),
    "CIActionsCacheNearLimit": (
        "warning",
        "The Actions cache of {repository} is nearly full",
        "Cache usage is above 90% of the limit; GitHub evicts the oldest entries.",
        "cipe-build-cache",
    ),
    "CIImageSizeGrowth": (
        "info",
        "Image {image}:{tag} ({platform}) grew",
        "It is more than 1.1× its size 7d ago.",
        "cipe-images",
    ),
    "CITestFlakyRateRising": (
        "warning",
        "Flaky tests are rising in {suite} ({repository} {workflow})",
        "Flaky occurrences per case run over the last 24h are more than 2× the rate of the 7d before, with at least 3 occurrences; `ci-pipeline-exporter analyze flaky` lists the cases.",
        "cipe-tests",
    ),
    "CIPipelineExporterDown": (
        "critical",
        "ci-pipeline-exporter cannot poll {source}",
        "The source's polls fail; its metrics are stale. See ci_pipeline_exporter_poll_errors_total.",
        "cipe-exporter-health",
    ),
    "CIPipelineExporterStale": (
        "warning",
        "No successful poll of {source} for a while",
        "The last successful poll is older than 3× the poll interval.",
        "cipe-exporter-health",
    ),
    "CIPipelineExporterSeriesNearCap": (
        "warning",
        "{metric} is near its series cap",
        'It holds more than 80% of limits.max_series_per_metric; beyond the cap new jobs, steps and runners fold into "other".',
        "cipe-exporter-health",
    ),
    "CIGitHubRateLimitLow": (
        "warning",
        "GitHub API rate limit ({resource}) is running out",
        "Less than 10% of the limit remains; polling slows down and pauses.",
        "cipe-exporter-health",
    ),
}


def _expected(alert: str, labels: dict[str, str]) -> dict[str, Any]:
    severity, summary, description, dashboard = EXPECTED[alert]
    annotations = {
        "summary": summary.format(**labels),
        "description": description.format(**labels),
        "runbook_url": f"{RUNBOOK}#{alert.lower()}",
        "dashboard_url": f"{GRAFANA_URL}/{dashboard}",
    }
    return {"exp_labels": {**labels, "severity": severity}, "exp_annotations": annotations}


def test_every_alert_has_its_expectation() -> None:
    """A new alert needs its written-out expectation (and its promtool case) here."""
    document = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in document["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == set(EXPECTED)


def histogram(
    name: str, labels: dict[str, str], buckets: dict[str, str], count: str
) -> list[dict[str, str]]:
    series = [
        _series(f"{name}_bucket", {**labels, "le": le}, values) for le, values in buckets.items()
    ]
    series.append(_series(f"{name}_count", labels, count))
    return series


RUN = {"workflow": "CI", "branch": "main", "event": "push", "result": "success"}


def _run_hist(
    repo: str, les: dict[str, tuple[int, int]], jump: str = "10m"
) -> list[dict[str, str]]:
    """Counters at 0, then at `jump` minutes the given cumulative counts (le → (before, after))."""
    minutes = int(jump.rstrip("m"))
    buckets = {le: f"{a}x{minutes} {b}x200" for le, (a, b) in les.items()}
    total = max(b for _, b in les.values())
    return histogram(
        "cicd_pipeline_run_duration_seconds",
        {"repository": repo, **RUN},
        buckets,
        f"0x{minutes} {total}x200",
    )


def above_target() -> dict[str, Any]:
    """Target upper 720 s. fires: 1 of 3 runs within; exact: 2 of 4 within (median exactly at the
    bound); few: 2 runs, both above (one run too few)."""
    keys = {"workflow": "CI", "branch": "main"}
    series = []
    for repo in ("fires", "exact", "few"):
        series.append(
            _series(
                "cicd_pipeline_target_duration_seconds",
                {"repository": repo, **keys, "bound": "upper"},
                "720x200",
            )
        )
    series += _run_hist("fires", {"600": (0, 0), "720": (0, 1), "900": (0, 3), "+Inf": (0, 3)})
    series += _run_hist("exact", {"600": (0, 0), "720": (0, 2), "900": (0, 4), "+Inf": (0, 4)})
    series += _run_hist("few", {"600": (0, 0), "720": (0, 0), "900": (0, 2), "+Inf": (0, 2)})
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {
                "eval_time": "60m",
                "alertname": "CIPipelineAboveTarget",
                "exp_alerts": [_expected("CIPipelineAboveTarget", {"repository": "fires", **keys})],
            }
        ],
    }


def _two_windows(
    metric: str, labels: dict[str, str], baseline: dict[str, int], recent: dict[str, int]
) -> list[dict[str, str]]:
    """Hourly samples over 8 days: `baseline` runs land at hour 24, `recent` runs at hour 180."""
    buckets = {}
    for le, base in baseline.items():
        a, b = base, base + recent[le]
        buckets[le] = f"0x23 {a}x156 {b}x40"
    total_a, total_b = baseline["+Inf"], baseline["+Inf"] + recent["+Inf"]
    return histogram(metric, labels, buckets, f"0x23 {total_a}x156 {total_b}x40")


def regressions() -> dict[str, Any]:
    """Baseline medians 550 s (10 runs in (500, 600]). Run: fires at 750 s (1.36×), silent at
    654.5 s (1.19×) and with 4 recent runs. Job (1.25×): fires at 750 s, silent at 682 s (1.24×)."""
    series = []
    run = "cicd_pipeline_run_duration_seconds"
    job = "cicd_pipeline_task_run_duration_seconds"
    base = {"500": 0, "600": 10, "+Inf": 10}
    cases = {
        "fires": (
            {"500": 0, "600": 10, "800": 10, "+Inf": 10},
            {"500": 0, "600": 0, "800": 10, "+Inf": 10},
        ),
        "at119": (
            {"500": 0, "600": 10, "709": 10, "+Inf": 10},
            {"500": 0, "600": 0, "709": 10, "+Inf": 10},
        ),
        "few": (
            {"500": 0, "600": 10, "800": 10, "+Inf": 10},
            {"500": 0, "600": 0, "800": 4, "+Inf": 4},
        ),
    }
    for repo, (b, r) in cases.items():
        series += _two_windows(run, {"repository": repo, **RUN}, b, r)
    job_labels = {"workflow": "CI", "job_name": "test-suite", "result": "success"}
    for repo, (b, r) in {
        "fires": (
            {"500": 0, "600": 10, "800": 10, "+Inf": 10},
            {"500": 0, "600": 0, "800": 10, "+Inf": 10},
        ),
        "at124": (
            {"500": 0, "600": 10, "764": 10, "+Inf": 10},
            {"500": 0, "600": 0, "764": 10, "+Inf": 10},
        ),
    }.items():
        series += _two_windows(job, {"repository": repo, **job_labels}, b, r)
    assert base
    keys = {"workflow": "CI", "branch": "main"}
    return {
        "interval": "1h",
        "input_series": series,
        "alert_rule_test": [
            {
                "eval_time": "192h",
                "alertname": "CIPipelineDurationRegression",
                "exp_alerts": [
                    _expected("CIPipelineDurationRegression", {"repository": "fires", **keys})
                ],
            },
            {
                "eval_time": "192h",
                "alertname": "CIJobDurationRegression",
                "exp_alerts": [
                    _expected(
                        "CIJobDurationRegression",
                        {"repository": "fires", "workflow": "CI", "job_name": "test-suite"},
                    )
                ],
            },
        ],
    }


def small_alerts() -> dict[str, Any]:
    queue = "cicd_pipeline_task_run_queue_seconds"
    qlabels = {"repository": "r", "workflow": "CI"}
    series = []
    # Queue p90 by runner labels: 10 waits in (120, 300] fire; 9 within 120 and 1 above: p90
    # exactly 120, silent.
    series += histogram(
        queue,
        {**qlabels, "runner_labels": "gpu,self-hosted"},
        {"60": "0x5 0x100", "120": "0x5 0x100", "300": "0x5 10x100", "+Inf": "0x5 10x100"},
        "0x5 10x100",
    )
    series += histogram(
        queue,
        {**qlabels, "runner_labels": "ubuntu-latest"},
        {"60": "0x5 0x100", "120": "0x5 9x100", "300": "0x5 10x100", "+Inf": "0x5 10x100"},
        "0x5 10x100",
    )
    # Cache hit ratio over 6h: 4 cached / 6 executed fires; 5 / 5 (exactly 0.5) silent.
    for jobname, (cached, executed) in {"low": (4, 6), "half": (5, 5)}.items():
        labels = {"repository": "r", "workflow": "CI", "job_name": jobname}
        series.append(
            _series("buildkit_steps_total", {**labels, "result": "cached"}, f"0x5 {cached}x100")
        )
        series.append(
            _series("buildkit_steps_total", {**labels, "result": "executed"}, f"0x5 {executed}x100")
        )
    # Actions cache: 95 % fires, exactly 90 % silent.
    for repo, usage in {"full": 9.5e9, "edge": 9e9}.items():
        series.append(
            _series("github_actions_cache_usage_bytes", {"repository": repo}, f"{usage:.0f}x100")
        )
        series.append(
            _series("github_actions_cache_limit_bytes", {"repository": repo}, "10000000000x100")
        )
    # Exporter: one source down for 20 m fires; another down for 10 m only is silent.
    series.append(_series("ci_pipeline_exporter_up", {"source": "github:down"}, "0x100"))
    series.append(_series("ci_pipeline_exporter_up", {"source": "github:flaky"}, "1x19 0x100"))
    # Stale: last success at 0 (fires); one exactly 3 intervals old (silent); poll interval 60 s.
    for source, values in {"github:stale": "0x100", "github:edge": "-180+60x100"}.items():
        series.append(
            _series(
                "ci_pipeline_exporter_last_success_timestamp_seconds", {"source": source}, values
            )
        )
        series.append(
            _series("ci_pipeline_exporter_poll_interval_seconds", {"source": source}, "60x100")
        )
    # Queued: the oldest job of gpu queued at 0 (30 min by eval time) fires; the ubuntu one queued
    # at 15 min has waited exactly the threshold (silent).
    for runner, queued_at in {"gpu,self-hosted": "0", "ubuntu-latest": "900"}.items():
        series.append(
            _series(
                "cicd_pipeline_task_run_oldest_queued_timestamp_seconds",
                {"repository": "r", "runner_labels": runner},
                f"{queued_at}x100",
            )
        )
    # Series: 90 % of the cap fires, exactly 80 % is silent.
    for metric, count in {"near": 4500, "edge": 4000}.items():
        series.append(_series("ci_pipeline_exporter_series", {"metric": metric}, f"{count}x100"))
    series.append(_series("ci_pipeline_exporter_series_limit", {}, "5000x100"))
    # Rate limit: 8 % left fires; exactly 10 % silent.
    series.append(
        _series("ci_pipeline_exporter_github_rate_limit_remaining", {"resource": "core"}, "400x100")
    )
    series.append(
        _series("ci_pipeline_exporter_github_rate_limit_limit", {"resource": "core"}, "5000x100")
    )
    series.append(
        _series("ci_pipeline_exporter_github_rate_limit_remaining", {"resource": "search"}, "3x100")
    )
    series.append(
        _series("ci_pipeline_exporter_github_rate_limit_limit", {"resource": "search"}, "30x100")
    )
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {
                "eval_time": "30m",
                "alertname": "CIJobQueueTimeHigh",
                "exp_alerts": [
                    _expected(
                        "CIJobQueueTimeHigh",
                        {"repository": "r", "workflow": "CI", "runner_labels": "gpu,self-hosted"},
                    )
                ],
            },
            {
                "eval_time": "30m",
                "alertname": "CIJobsQueuedTooLong",
                "exp_alerts": [
                    _expected(
                        "CIJobsQueuedTooLong",
                        {"repository": "r", "runner_labels": "gpu,self-hosted"},
                    )
                ],
            },
            {
                "eval_time": "60m",
                "alertname": "CIBuildCacheHitRatioLow",
                "exp_alerts": [
                    _expected(
                        "CIBuildCacheHitRatioLow",
                        {"repository": "r", "workflow": "CI", "job_name": "low"},
                    )
                ],
            },
            {
                "eval_time": "90m",
                "alertname": "CIPipelineExporterSeriesNearCap",
                "exp_alerts": [_expected("CIPipelineExporterSeriesNearCap", {"metric": "near"})],
            },
            {
                "eval_time": "40m",
                "alertname": "CIActionsCacheNearLimit",
                "exp_alerts": [_expected("CIActionsCacheNearLimit", {"repository": "full"})],
            },
            {
                "eval_time": "30m",
                "alertname": "CIPipelineExporterDown",
                "exp_alerts": [
                    _expected("CIPipelineExporterDown", {**BASE, "source": "github:down"})
                ],
            },
            {
                "eval_time": "10m",
                "alertname": "CIPipelineExporterStale",
                "exp_alerts": [_expected("CIPipelineExporterStale", {"source": "github:stale"})],
            },
            {
                "eval_time": "15m",
                "alertname": "CIGitHubRateLimitLow",
                "exp_alerts": [_expected("CIGitHubRateLimitLow", {"resource": "core"})],
            },
        ],
    }


def image_growth() -> dict[str, Any]:
    """Every 5 minutes (within the lookback) over 8 days: 1000 → 1200 bytes after a week fires (1.2×); → 1100 (exactly
    1.1×) is silent."""
    labels = {"registry": "ghcr.io", "tag": "latest", "platform": "linux/amd64"}
    series = [
        _series("container_image_size_bytes", {**labels, "image": "grew"}, "1000x2016 1200x300"),
        _series("container_image_size_bytes", {**labels, "image": "edge"}, "1000x2016 1100x300"),
    ]
    return {
        "interval": "5m",
        "input_series": series,
        "alert_rule_test": [
            {
                "eval_time": "190h",
                "alertname": "CIImageSizeGrowth",
                "exp_alerts": [_expected("CIImageSizeGrowth", {**BASE, **labels, "image": "grew"})],
            },
        ],
    }


def flaky_rising() -> dict[str, Any]:
    """Hourly over 9 days, 10 case runs an hour per suite; flaky occurrences per hour in the 8 days
    before, then in the last day: 0.05 → 0.25 fires (5×); a suite new in the last day with 0.25
    fires (no baseline: compared with 0); 0.1 → 0.15 (1.5×) is silent; 0 → 0.08 (1.92 in the day,
    fewer than 3) is silent."""
    series = []
    suites = {
        "rising": ("0+0.05x191", "9.8+0.25x23"),
        "new": ("_x192", "0+0.25x23"),
        "steady": ("0+0.1x191", "19.25+0.15x23"),
        "rare": ("0x191", "0.08+0.08x23"),
    }
    for suite, (before, last_day) in suites.items():
        labels = {"repository": "r", "workflow": "CI", "suite": suite}
        runs = "_x192 0+10x23" if suite == "new" else "0+10x215"
        series.append(_series("cicd_test_cases_total", {**labels, "result": "passed"}, runs))
        series.append(_series("cicd_test_case_flaky_total", labels, f"{before} {last_day}"))
    return {
        "interval": "1h",
        "input_series": series,
        "alert_rule_test": [
            {
                "eval_time": "215h",
                "alertname": "CITestFlakyRateRising",
                "exp_alerts": [
                    _expected(
                        "CITestFlakyRateRising", {"repository": "r", "workflow": "CI", "suite": s}
                    )
                    for s in ("new", "rising")
                ],
            },
        ],
    }


def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 18 rules found" in result.stdout


def test_every_alert_has_the_contract_fields() -> None:
    alerts = _alerts()
    assert set(alerts) == {
        "CIPipelineAboveTarget",
        "CIPipelineDurationRegression",
        "CIJobDurationRegression",
        "CIJobQueueTimeHigh",
        "CIJobsQueuedTooLong",
        "CIBuildCacheHitRatioLow",
        "CIActionsCacheNearLimit",
        "CIImageSizeGrowth",
        "CITestFlakyRateRising",
        "CIPipelineExporterDown",
        "CIPipelineExporterStale",
        "CIGitHubRateLimitLow",
        "CIPipelineExporterSeriesNearCap",
    }
    runbook = (GRAFANA / "runbook.md").read_text()
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert set(rule["annotations"]) == {
            "summary",
            "description",
            "runbook_url",
            "dashboard_url",
        }
        assert rule["annotations"]["runbook_url"].endswith(f"#{name.lower()}")
        assert f"## {name}" in runbook
        assert 'job="ci-pipeline-exporter"' in rule["expr"]


def test_promtool_unit_tests_cover_every_alert(tmp_path: Path) -> None:
    """Each alert fires on its case and stays silent just inside the boundary (exactly at the
    target, one run too few, the regression at 1.19×, …): promtool compares the full set."""
    promtool = require_binary("promtool")
    tests = [above_target(), regressions(), small_alerts(), image_growth(), flaky_rising()]
    covered = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert covered == set(_alerts())
    document = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}
    path = tmp_path / "alerts.test.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=10_000))
    result = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
