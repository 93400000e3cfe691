"""Recording and alerting rules, from the knobs. Alert semantics: docs/design.md §4."""

from __future__ import annotations

from typing import Any

from grafana.knobs import DASHBOARD_UIDS, Knobs

RUN = "cicd_pipeline_run_duration_seconds"
JOB = "cicd_pipeline_task_run_duration_seconds"
RUN_KEYS = "repository, workflow, branch"
# The CI job's label is `job_name`: a label called `job` would collide with Prometheus' own
# target label (renamed to exported_job, or overwritten with honor_labels: true).
CI_JOB = "job_name"
# Job durations are kept across branches (one histogram per job and result).
JOB_KEYS = f"repository, workflow, {CI_JOB}"


def _median(
    metric: str, keys: str, window: str, sel: str, *, extra: str = "", offset: str = ""
) -> str:
    off = f" offset {offset}" if offset else ""
    matchers = ", ".join(x for x in (sel, extra) if x)
    return (
        f"histogram_quantile(0.5, sum by ({keys}, le) "
        f"(increase({metric}_bucket{{{matchers}}}[{window}]{off})))"
    )


def _count(
    metric: str, keys: str, window: str, sel: str, *, extra: str = "", offset: str = ""
) -> str:
    off = f" offset {offset}" if offset else ""
    matchers = ", ".join(x for x in (sel, extra) if x)
    return f"sum by ({keys}) (increase({metric}_count{{{matchers}}}[{window}]{off}))"


def _alert(
    name: str,
    expr: str,
    *,
    duration: str,
    severity: str,
    summary: str,
    description: str,
    dashboard: str,
    k: Knobs,
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{k.runbook_url}#{name.lower()}",
            "dashboard_url": f"{k.grafana_url}/d/{DASHBOARD_UIDS[dashboard]}",
        },
    }


def _flaky_rising(k: Knobs) -> str:
    """Flaky occurrences per case run of a suite in the recent window above `flaky_factor` times
    the rate of the baseline window before it (a suite without a baseline compares with 0), with
    at least `flaky_min_occurrences` recent occurrences."""
    keys = "repository, workflow, suite"
    ran = f'{k.selector}, result=~"passed|failed|error"'

    def increase(metric: str, matchers: str, window: str, offset: str = "") -> str:
        off = f" offset {offset}" if offset else ""
        return f"sum by ({keys}) (increase({metric}{{{matchers}}}[{window}]{off}))"

    flaky, cases = "cicd_test_case_flaky_total", "cicd_test_cases_total"
    recent = increase(flaky, k.selector, k.flaky_recent)
    recent_rate = f"({recent} / {increase(cases, ran, k.flaky_recent)})"
    baseline_rate = (
        f"({increase(flaky, k.selector, k.flaky_baseline, k.flaky_recent)} / "
        f"{increase(cases, ran, k.flaky_baseline, k.flaky_recent)})"
    )
    return (
        f"{recent_rate} > {k.flaky_factor} * ({baseline_rate} or on({keys}) ({recent} * 0))"
        f" and on({keys}) ({recent} >= {k.flaky_min_occurrences})"
    )


def recording_rules(k: Knobs) -> list[dict[str, Any]]:
    sel = k.selector
    rules = []
    for q in ("0.5", "0.9"):
        name = f"p{int(float(q) * 100)}"
        rules.append(
            {
                "record": f"ci:cicd_pipeline_run_duration_seconds:{name}",
                "expr": f"histogram_quantile({q}, sum by ({RUN_KEYS}, le) "
                f'(increase({RUN}_bucket{{{sel}, result="success"}}[{k.recording_window}])))',
            }
        )
        rules.append(
            {
                "record": f"ci:cicd_pipeline_task_run_duration_seconds:{name}",
                "expr": f"histogram_quantile({q}, sum by ({JOB_KEYS}, le) "
                f'(increase({JOB}_bucket{{{sel}, result="success"}}[{k.recording_window}])))',
            }
        )
    # 0 at the baseline's upper bound, 1 at the target's upper bound (clamped), by the median of
    # the progress window's successful runs.
    baseline = (
        f'max by ({RUN_KEYS}) (cicd_pipeline_baseline_duration_seconds{{{sel}, bound="upper"}})'
    )
    target = f'max by ({RUN_KEYS}) (cicd_pipeline_target_duration_seconds{{{sel}, bound="upper"}})'
    median = _median(RUN, RUN_KEYS, k.progress_window, sel, extra='result="success"')
    rules.append(
        {
            "record": "ci:cicd_pipeline_target_progress:ratio",
            "expr": f"clamp(({baseline} - {median}) / ({baseline} - {target}), 0, 1)",
        }
    )
    return rules


def alert_rules(k: Knobs) -> list[dict[str, Any]]:
    sel = k.selector
    success = 'result="success"'
    above = (
        f"({_median(RUN, RUN_KEYS, k.above_target_window, sel, extra=success)} "
        f'> on({RUN_KEYS}) group_left max by ({RUN_KEYS}) (cicd_pipeline_target_duration_seconds{{{sel}, bound="upper"}}))'
        f" and on({RUN_KEYS}) ({_count(RUN, RUN_KEYS, k.above_target_window, sel, extra=success)} >= {k.above_target_min_runs})"
    )
    regression = (
        f"({_median(RUN, RUN_KEYS, k.regression_recent, sel, extra=success)} "
        f"> {k.regression_factor} * {_median(RUN, RUN_KEYS, k.regression_baseline, sel, extra=success, offset=k.regression_recent)})"
        f" and on({RUN_KEYS}) ({_count(RUN, RUN_KEYS, k.regression_recent, sel, extra=success)} >= {k.regression_min_runs})"
        f" and on({RUN_KEYS}) ({_count(RUN, RUN_KEYS, k.regression_baseline, sel, extra=success, offset=k.regression_recent)} >= {k.regression_min_runs})"
    )
    job_keys = JOB_KEYS
    job_regression = (
        f"({_median(JOB, job_keys, k.regression_recent, sel, extra=success)} "
        f"> {k.job_regression_factor} * {_median(JOB, job_keys, k.regression_baseline, sel, extra=success, offset=k.regression_recent)})"
        f" and on({job_keys}) ({_count(JOB, job_keys, k.regression_recent, sel, extra=success)} >= {k.regression_min_runs})"
        f" and on({job_keys}) ({_count(JOB, job_keys, k.regression_baseline, sel, extra=success, offset=k.regression_recent)} >= {k.regression_min_runs})"
    )
    queue = (
        "histogram_quantile(0.9, sum by (repository, workflow, runner_labels, le) "
        f"(rate(cicd_pipeline_task_run_queue_seconds_bucket{{{sel}}}[{k.queue_window}]))) > {k.queue_p90_seconds}"
    )
    queued_too_long = (
        f"time() - min by (repository, runner_labels) "
        f"(cicd_pipeline_task_run_oldest_queued_timestamp_seconds{{{sel}}}) > {k.queued_too_long_seconds:g}"
    )
    series_near_cap = (
        f"max by (metric) (ci_pipeline_exporter_series{{{sel}}}) > on() group_left "
        f"{k.series_near_cap_ratio} * max(ci_pipeline_exporter_series_limit{{{sel}}})"
    )
    steps = "buildkit_steps_total"
    cache_hit = (
        f'sum by (repository, workflow, {CI_JOB}) (increase({steps}{{{sel}, result="cached"}}[{k.cache_hit_window}]))'
        f' / sum by (repository, workflow, {CI_JOB}) (increase({steps}{{{sel}, result=~"cached|executed"}}[{k.cache_hit_window}]))'
        f" < {k.cache_hit_min_ratio}"
    )
    actions_cache = (
        f"github_actions_cache_usage_bytes{{{sel}}} / on(repository) "
        f"github_actions_cache_limit_bytes{{{sel}}} > {k.actions_cache_ratio}"
    )
    image = (
        f"container_image_size_bytes{{{sel}}} > {k.image_growth_factor} * "
        f"(container_image_size_bytes{{{sel}}} offset {k.image_growth_offset})"
    )
    stale = (
        f"time() - ci_pipeline_exporter_last_success_timestamp_seconds{{{sel}}} > on(source) "
        f"({k.stale_factor} * ci_pipeline_exporter_poll_interval_seconds{{{sel}}})"
    )
    rate = (
        f"ci_pipeline_exporter_github_rate_limit_remaining{{{sel}}} / on(resource) "
        f"ci_pipeline_exporter_github_rate_limit_limit{{{sel}}} < {k.rate_limit_ratio}"
    )
    return [
        _alert(
            "CIPipelineAboveTarget",
            above,
            duration=k.above_target_for,
            severity="warning",
            summary="CI pipeline {{ $labels.repository }} {{ $labels.workflow }} ({{ $labels.branch }}) is above its target",
            description=f"Fewer than half of the successful runs in the last {k.above_target_window} finished within the "
            "target's upper bound.",
            dashboard="pipeline",
            k=k,
        ),
        _alert(
            "CIPipelineDurationRegression",
            regression,
            duration=k.regression_for,
            severity="warning",
            summary="CI pipeline {{ $labels.repository }} {{ $labels.workflow }} ({{ $labels.branch }}) got slower",
            description=f"The median run of the last {k.regression_recent} is more than {k.regression_factor}× the median of "
            f"the {k.regression_baseline} before.",
            dashboard="pipeline",
            k=k,
        ),
        _alert(
            "CIJobDurationRegression",
            job_regression,
            duration=k.regression_for,
            severity="warning",
            summary="CI job {{ $labels.job_name }} in {{ $labels.repository }} {{ $labels.workflow }} got slower",
            description=f"The job's median of the last {k.regression_recent} is more than {k.job_regression_factor}× its "
            f"median of the {k.regression_baseline} before.",
            dashboard="bottlenecks",
            k=k,
        ),
        _alert(
            "CIJobQueueTimeHigh",
            queue,
            duration=k.queue_for,
            severity="warning",
            summary="Jobs of {{ $labels.repository }} wait for runners",
            description=f"The 90th percentile queue time of jobs asking for {{{{ $labels.runner_labels }}}} over {k.queue_window} "
            f"is above {k.queue_p90_seconds:g} seconds.",
            dashboard="bottlenecks",
            k=k,
        ),
        _alert(
            "CIJobsQueuedTooLong",
            queued_too_long,
            duration=k.queued_too_long_for,
            severity="warning",
            summary="Jobs of {{ $labels.repository }} wait for a runner with labels {{ $labels.runner_labels }}",
            description=f"A job has been queued for more than {k.queued_too_long_seconds / 60:g} minutes "
            "(live, from workflow_job webhooks); the pool for these labels is short or offline.",
            dashboard="bottlenecks",
            k=k,
        ),
        _alert(
            "CIBuildCacheHitRatioLow",
            cache_hit,
            duration=k.cache_hit_for,
            severity="info",
            summary="BuildKit cache hits are low for {{ $labels.job_name }} in {{ $labels.repository }}",
            description=f"Less than {k.cache_hit_min_ratio:.0%} of the Dockerfile steps over {k.cache_hit_window} came from cache.",
            dashboard="build-cache",
            k=k,
        ),
        _alert(
            "CIActionsCacheNearLimit",
            actions_cache,
            duration=k.actions_cache_for,
            severity="warning",
            summary="The Actions cache of {{ $labels.repository }} is nearly full",
            description=f"Cache usage is above {k.actions_cache_ratio:.0%} of the limit; GitHub evicts the oldest entries.",
            dashboard="build-cache",
            k=k,
        ),
        _alert(
            "CIImageSizeGrowth",
            image,
            duration=k.image_growth_for,
            severity="info",
            summary="Image {{ $labels.image }}:{{ $labels.tag }} ({{ $labels.platform }}) grew",
            description=f"It is more than {k.image_growth_factor}× its size {k.image_growth_offset} ago.",
            dashboard="images",
            k=k,
        ),
        _alert(
            "CITestFlakyRateRising",
            _flaky_rising(k),
            duration=k.flaky_for,
            severity="warning",
            summary="Flaky tests are rising in {{ $labels.suite }} ({{ $labels.repository }} {{ $labels.workflow }})",
            description=f"Flaky occurrences per case run over the last {k.flaky_recent} are more than "
            f"{k.flaky_factor:g}× the rate of the {k.flaky_baseline} before, with at least "
            f"{k.flaky_min_occurrences} occurrences; `ci-pipeline-exporter analyze flaky` lists the cases.",
            dashboard="tests",
            k=k,
        ),
        _alert(
            "CIPipelineExporterDown",
            f"ci_pipeline_exporter_up{{{sel}}} == 0",
            duration=k.exporter_down_for,
            severity="critical",
            summary="ci-pipeline-exporter cannot poll {{ $labels.source }}",
            description="The source's polls fail; its metrics are stale. See ci_pipeline_exporter_poll_errors_total.",
            dashboard="exporter",
            k=k,
        ),
        _alert(
            "CIPipelineExporterStale",
            stale,
            duration=k.stale_for,
            severity="warning",
            summary="No successful poll of {{ $labels.source }} for a while",
            description=f"The last successful poll is older than {k.stale_factor}× the poll interval.",
            dashboard="exporter",
            k=k,
        ),
        _alert(
            "CIPipelineExporterSeriesNearCap",
            series_near_cap,
            duration=k.series_near_cap_for,
            severity="warning",
            summary="{{ $labels.metric }} is near its series cap",
            description=f"It holds more than {k.series_near_cap_ratio:.0%} of limits.max_series_per_metric; "
            'beyond the cap new jobs, steps and runners fold into "other".',
            dashboard="exporter",
            k=k,
        ),
        _alert(
            "CIGitHubRateLimitLow",
            rate,
            duration=k.rate_limit_for,
            severity="warning",
            summary="GitHub API rate limit ({{ $labels.resource }}) is running out",
            description=f"Less than {k.rate_limit_ratio:.0%} of the limit remains; polling slows down and pauses.",
            dashboard="exporter",
            k=k,
        ),
    ]


def rules_document(k: Knobs) -> dict[str, Any]:
    return {
        "groups": [
            {
                "name": "ci-pipeline-exporter.recording",
                "interval": "1m" if k == Knobs() else "1s",
                "rules": recording_rules(k),
            },
            {
                "name": "ci-pipeline-exporter.alerts",
                "interval": "1m" if k == Knobs() else "1s",
                "rules": alert_rules(k),
            },
        ]
    }
