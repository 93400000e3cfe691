"""The six dashboards, built with grafana-foundation-sdk (pinned exactly in pyproject.toml).

The CI job label is `job_name` (a label called `job` would collide with Prometheus' target label).

Every query uses the `$datasource` variable (never a fixed datasource) and the exporter's
selector from the knobs; `repository`, `workflow` and `branch` variables filter where the metric
has those labels."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

from grafana.knobs import DASHBOARD_UIDS, Knobs

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")


class Queries:
    def __init__(self, k: Knobs) -> None:
        self.job = k.selector
        self.run = (
            f'{k.selector}, repository=~"$repository", workflow=~"$workflow", branch=~"$branch"'
        )
        self.nobranch = f'{k.selector}, repository=~"$repository", workflow=~"$workflow"'
        self.repo = f'{k.selector}, repository=~"$repository"'
        # Recorded series (ci:…) are aggregated: they keep these labels but not job/instance.
        self.recorded = 'repository=~"$repository", workflow=~"$workflow", branch=~"$branch"'
        # Job durations are kept across branches.
        self.recorded_jobs = 'repository=~"$repository", workflow=~"$workflow"'


def _target(
    expr: str, legend: str = "", ref: str = "A", instant: bool = False
) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        query = query.legend_format(legend)
    if instant:
        query = query.instant()
    return query


def _ts(
    title: str, unit: str, *targets: prometheus.Dataquery, w: int = 12, h: int = 8
) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).datasource(DS).span(w).height(h)
    for target in targets:
        panel = panel.with_target(target)
    return panel


def _stat(title: str, unit: str, target: prometheus.Dataquery, w: int = 6) -> stat.Panel:
    return stat.Panel().title(title).unit(unit).datasource(DS).span(w).height(5).with_target(target)


def _bars(title: str, unit: str, target: prometheus.Dataquery, w: int = 12) -> bargauge.Panel:
    return (
        bargauge.Panel()
        .title(title)
        .unit(unit)
        .datasource(DS)
        .span(w)
        .height(8)
        .with_target(target)
    )


def _base(
    key: str,
    title: str,
    description: str,
    k: Knobs,
    *,
    branch: bool = True,
    job_variable: str | None = None,
) -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard(title)
        .uid(DASHBOARD_UIDS[key])
        .description(description)
        .tags(["ci-pipeline-exporter", "ci"])
        .editable()
        .time("now-7d", "now")
        .refresh("1m")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
    )
    variables = [
        (
            "repository",
            f"label_values(cicd_pipeline_run_duration_seconds_count{{{k.selector}}}, repository)",
        ),
        (
            "workflow",
            f'label_values(cicd_pipeline_run_duration_seconds_count{{{k.selector}, repository=~"$repository"}}, workflow)',
        ),
    ]
    if branch:
        variables.append(
            (
                "branch",
                f'label_values(cicd_pipeline_run_duration_seconds_count{{{k.selector}, repository=~"$repository", workflow=~"$workflow"}}, branch)',
            )
        )
    if job_variable:
        variables.append(("job", job_variable))
    for name, query in variables:
        board = board.with_variable(
            dashboard.QueryVariable(name)
            .label(name.title())
            .datasource(DS)
            .query(query)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
    return board


def pipeline(k: Knobs) -> dashboard.Dashboard:
    q = Queries(k)
    run = "cicd_pipeline_run_duration_seconds"
    return (
        _base(
            "pipeline",
            "CI pipeline vs target",
            "Run duration against the target and the baseline: the plan's progress.",
            k,
        )
        .with_row(dashboard.Row("Progress"))
        .with_panel(
            _stat(
                "Progress from baseline to target",
                "percentunit",
                _target(
                    f"avg(ci:cicd_pipeline_target_progress:ratio{{{q.recorded}}})", instant=True
                ),
            )
        )
        .with_panel(
            _stat(
                "Runs within target",
                "percentunit",
                _target(
                    f'sum(increase(cicd_pipeline_run_target_total{{{q.run}, outcome="within"}}[$__range])) / '
                    f"sum(increase(cicd_pipeline_run_target_total{{{q.run}}}[$__range]))",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _stat(
                "Median run (successful)",
                "s",
                _target(
                    f"max(ci:cicd_pipeline_run_duration_seconds:p50{{{q.recorded}}})", instant=True
                ),
            )
        )
        .with_panel(
            _stat(
                "Latest run",
                "s",
                _target(f"max(cicd_pipeline_run_last_duration_seconds{{{q.run}}})", instant=True),
            )
        )
        .with_panel(
            _ts(
                "Run duration: p50 / p90 with target and baseline bands",
                "s",
                _target(
                    f"max(ci:cicd_pipeline_run_duration_seconds:p50{{{q.recorded}}})", "p50", "A"
                ),
                _target(
                    f"max(ci:cicd_pipeline_run_duration_seconds:p90{{{q.recorded}}})", "p90", "B"
                ),
                _target(
                    f"max by (bound) (cicd_pipeline_target_duration_seconds{{{q.run}}})",
                    "target {{bound}}",
                    "C",
                ),
                _target(
                    f"max by (bound) (cicd_pipeline_baseline_duration_seconds{{{q.run}}})",
                    "baseline {{bound}}",
                    "D",
                ),
                w=24,
            )
        )
        .with_panel(
            _ts(
                "Runs per day",
                "short",
                _target(f"sum by (result) (increase({run}_count{{{q.run}}}[1d]))", "{{result}}"),
            )
        )
        .with_panel(
            _bars(
                "Latest run's critical path (job execution)",
                "s",
                _target(
                    f"max by (job_name) (cicd_pipeline_run_last_critical_path_job_seconds{{{q.run}}})",
                    "{{job_name}}",
                    instant=True,
                ),
            )
        )
        .with_row(dashboard.Row("Runner minutes and savings"))
        .with_panel(
            _stat(
                "Runner minutes per run (all branches)",
                "m",
                _target(
                    f"sum(increase(cicd_pipeline_task_run_duration_seconds_sum{{{q.nobranch}}}[1d])) / "
                    f"sum(increase({run}_count{{{q.nobranch}}}[1d])) / 60",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _stat(
                "Runner minutes per day (all branches)",
                "m",
                _target(
                    f"sum(increase(cicd_pipeline_task_run_duration_seconds_sum{{{q.nobranch}}}[1d])) / 60",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _stat(
                "Runner minutes per month (all branches)",
                "m",
                _target(
                    f"sum(increase(cicd_pipeline_task_run_duration_seconds_sum{{{q.nobranch}}}[30d])) / 60",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _stat(
                "Minutes saved per month vs baseline",
                "m",
                _target(
                    f'(max(cicd_pipeline_baseline_duration_seconds{{{q.run}, bound="upper"}}) - '
                    f"max(ci:cicd_pipeline_run_duration_seconds:p50{{{q.recorded}}})) * "
                    f"sum(increase({run}_count{{{q.run}}}[30d])) / 60",
                    instant=True,
                ),
            )
        )
    )


def bottlenecks(k: Knobs) -> dashboard.Dashboard:
    q = Queries(k)
    job = "cicd_pipeline_task_run_duration_seconds"
    job_var = f'label_values(cicd_pipeline_task_step_duration_seconds_count{{{k.selector}, repository=~"$repository"}}, job_name)'
    return (
        _base(
            "bottlenecks",
            "CI bottlenecks",
            "Where the run's time goes: jobs, steps, queues.",
            k,
            job_variable=job_var,
        )
        .with_panel(
            _bars(
                "Each job's share of the run time",
                "percentunit",
                _target(
                    f"sum by (job_name) (increase({job}_sum{{{q.nobranch}}}[$__range])) / on() group_left "
                    f"sum(increase(cicd_pipeline_run_duration_seconds_sum{{{q.nobranch}}}[$__range]))",
                    "{{job_name}}",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _ts(
                "Job duration p50 / p90",
                "s",
                _target(
                    f"max by (job_name) (ci:cicd_pipeline_task_run_duration_seconds:p50{{{q.recorded_jobs}}})",
                    "{{job_name}} p50",
                    "A",
                ),
                _target(
                    f"max by (job_name) (ci:cicd_pipeline_task_run_duration_seconds:p90{{{q.recorded_jobs}}})",
                    "{{job_name}} p90",
                    "B",
                ),
            )
        )
        .with_panel(
            _bars(
                "Step breakdown of $job (mean seconds)",
                "s",
                _target(
                    f'sum by (step) (increase(cicd_pipeline_task_step_duration_seconds_sum{{{q.nobranch}, job_name=~"$job"}}[$__range])) / '
                    f'sum by (step) (increase(cicd_pipeline_task_step_duration_seconds_count{{{q.nobranch}, job_name=~"$job"}}[$__range]))',
                    "{{step}}",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _bars(
                "Latest run of $job: seconds per step",
                "s",
                _target(
                    f'max by (step) (cicd_pipeline_task_step_last_duration_seconds{{{q.nobranch}, job_name=~"$job"}})',
                    "{{step}}",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _ts(
                "Queue time p90 by runner labels",
                "s",
                _target(
                    f"histogram_quantile(0.9, sum by (runner_labels, le) (increase(cicd_pipeline_task_run_queue_seconds_bucket{{{q.nobranch}}}[1h])))",
                    "{{runner_labels}}",
                ),
            )
        )
        .with_panel(
            _ts(
                "Runs in progress",
                "short",
                _target(
                    f'sum by (state) (cicd_pipeline_run_active{{{k.selector}, repository=~"$repository", workflow=~"$workflow"}})',
                    "{{state}}",
                ),
            )
        )
        .with_panel(
            _ts(
                "Jobs waiting now by runner labels (live, webhooks)",
                "short",
                _target(
                    f'sum by (runner_labels, state) (cicd_pipeline_task_run_active{{{q.nobranch}, state=~"queued|waiting"}})',
                    "{{runner_labels}} {{state}}",
                ),
                w=8,
            )
        )
        .with_panel(
            _bars(
                "Longest wait now by runner labels (0: nothing queued)",
                "s",
                _target(
                    f"(time() - min by (runner_labels) (cicd_pipeline_task_run_oldest_queued_timestamp_seconds{{{q.repo}}})) or on() vector(0)",
                    "{{runner_labels}}",
                    instant=True,
                ),
                w=8,
            )
        )
        .with_panel(
            _ts(
                "Self-hosted runner pools",
                "short",
                _target(
                    f"sum by (scope, runner_group, state) (cicd_worker_count{{{k.selector}}})",
                    "{{scope}} {{runner_group}} {{state}}",
                ),
                w=8,
            )
        )
    )


def build_cache(k: Knobs) -> dashboard.Dashboard:
    q = Queries(k)
    steps = "buildkit_steps_total"
    return (
        _base(
            "build-cache",
            "CI build and cache",
            "BuildKit cache hits, cache import/export by backend, actions/cache.",
            k,
            branch=False,
        )
        .with_panel(
            _ts(
                "BuildKit cache hit ratio by job",
                "percentunit",
                _target(
                    f'sum by (job_name) (increase({steps}{{{q.nobranch}, result="cached"}}[6h])) / '
                    f'sum by (job_name) (increase({steps}{{{q.nobranch}, result=~"cached|executed"}}[6h]))',
                    "{{job_name}}",
                ),
            )
        )
        .with_panel(
            _ts(
                "Cache import seconds by backend (mean per build)",
                "s",
                _target(
                    f"sum by (cache_backend) (increase(buildkit_cache_import_seconds_sum{{{q.nobranch}}}[6h])) / "
                    f"sum by (cache_backend) (increase(buildkit_cache_import_seconds_count{{{q.nobranch}}}[6h]))",
                    "{{cache_backend}}",
                ),
            )
        )
        .with_panel(
            _ts(
                "Cache export seconds by backend (mean per build)",
                "s",
                _target(
                    f"sum by (cache_backend) (increase(buildkit_cache_export_seconds_sum{{{q.nobranch}}}[6h])) / "
                    f"sum by (cache_backend) (increase(buildkit_cache_export_seconds_count{{{q.nobranch}}}[6h]))",
                    "{{cache_backend}}",
                ),
            )
        )
        .with_panel(
            table.Panel()
            .title("Slowest Dockerfile instructions (mean seconds)")
            .datasource(DS)
            .span(12)
            .height(8)
            .with_target(
                _target(
                    f"topk(10, sum by (job_name, stage, instruction) (increase(buildkit_step_duration_seconds_sum{{{q.nobranch}}}[$__range])) / "
                    f"sum by (job_name, stage, instruction) (increase(buildkit_step_duration_seconds_count{{{q.nobranch}}}[$__range])))",
                    instant=True,
                )
            )
        )
        .with_panel(
            _stat(
                "actions/cache hit rate",
                "percentunit",
                _target(
                    f'sum(increase(github_actions_cache_restores_total{{{q.nobranch}, result="hit"}}[$__range])) / '
                    f"sum(increase(github_actions_cache_restores_total{{{q.nobranch}}}[$__range]))",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _ts(
                "Actions cache usage against its limit",
                "bytes",
                _target(
                    f"sum by (repository) (github_actions_cache_usage_bytes{{{q.repo}}})",
                    "usage {{repository}}",
                    "A",
                ),
                _target(
                    f"sum by (repository) (github_actions_cache_limit_bytes{{{q.repo}}})",
                    "limit {{repository}}",
                    "B",
                ),
                _target(
                    f"sum by (kind) (github_actions_cache_entries_bytes{{{q.repo}}})",
                    "entries: {{kind}}",
                    "C",
                ),
            )
        )
        .with_panel(
            _ts(
                "Build duration by job and backend (mean)",
                "s",
                _target(
                    f"sum by (job_name, cache_backend) (increase(buildkit_build_duration_seconds_sum{{{q.nobranch}}}[6h])) / "
                    f"sum by (job_name, cache_backend) (increase(buildkit_build_duration_seconds_count{{{q.nobranch}}}[6h]))",
                    "{{job_name}} ({{cache_backend}})",
                ),
            )
        )
    )


def images(k: Knobs) -> dashboard.Dashboard:
    size = "container_image_size_bytes"
    board = (
        dashboard.Dashboard("CI images")
        .uid(DASHBOARD_UIDS["images"])
        .description("Image sizes per platform, sets and growth.")
        .tags(["ci-pipeline-exporter", "ci"])
        .editable()
        .time("now-30d", "now")
        .refresh("5m")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable("image")
            .label("Image")
            .datasource(DS)
            .query(f"label_values({size}{{{k.selector}}}, image)")
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
    )
    sel = f'{k.selector}, image=~"$image"'
    return (
        board.with_panel(
            _ts(
                "Size per image and platform",
                "bytes",
                _target(
                    f"max by (image, tag, platform) ({size}{{{sel}}})",
                    "{{image}}:{{tag}} {{platform}}",
                ),
                w=24,
            )
        )
        .with_panel(
            _ts(
                "Set total against unique bytes",
                "bytes",
                _target(
                    f"max by (set, kind) (container_image_set_size_bytes{{{k.selector}}})",
                    "{{set}} {{kind}}",
                ),
            )
        )
        .with_panel(
            _bars(
                "Week-over-week growth (0 until a week of history exists)",
                "percentunit",
                _target(
                    f"max by (image, tag, platform) ({size}{{{sel}}}) / max by (image, tag, platform) "
                    f"(({size}{{{sel}}} offset 7d) or {size}{{{sel}}}) - 1",
                    "{{image}}:{{tag}} {{platform}}",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _bars(
                "Layers per image",
                "short",
                _target(
                    f"max by (image, platform) (container_image_layers{{{sel}}})",
                    "{{image}} {{platform}}",
                    instant=True,
                ),
            )
        )
    )


def tests(k: Knobs) -> dashboard.Dashboard:
    q = Queries(k)
    suite = "cicd_test_suite_duration_seconds"
    return (
        _base(
            "tests",
            "CI tests",
            "Time per test suite (app): where to split the test job. Flaky tests (failed and "
            "passed on one commit) and the re-runs they cost: `ci-pipeline-exporter analyze "
            "flaky` lists the cases.",
            k,
            branch=False,
        )
        .with_panel(
            _ts(
                "Time per suite (mean per run)",
                "s",
                _target(
                    f"sum by (suite) (increase({suite}_sum{{{q.nobranch}}}[6h])) / sum by (suite) (increase({suite}_count{{{q.nobranch}}}[6h]))",
                    "{{suite}}",
                ),
            )
        )
        .with_panel(
            _bars(
                "Latest run: time per suite",
                "s",
                _target(
                    f"max by (suite) (cicd_test_suite_last_duration_seconds{{{q.nobranch}}})",
                    "{{suite}}",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _bars(
                "Slowest suites (mean)",
                "s",
                _target(
                    f"topk(5, sum by (suite) (increase({suite}_sum{{{q.nobranch}}}[$__range])) / sum by (suite) (increase({suite}_count{{{q.nobranch}}}[$__range])))",
                    "{{suite}}",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _ts(
                "Failures, errors and skips",
                "short",
                _target(
                    f'sum by (suite, result) (increase(cicd_test_cases_total{{{q.nobranch}, result=~"failed|error|skipped"}}[1h]))',
                    "{{suite}} {{result}}",
                ),
            )
        )
        .with_panel(
            _stat(
                "Flaky occurrences",
                "short",
                _target(
                    f"sum(increase(cicd_test_case_flaky_total{{{q.nobranch}}}[$__range]))",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _stat(
                "Re-runs after a test failure",
                "short",
                _target(
                    f"sum(increase(cicd_test_case_reruns_total{{{q.nobranch}}}[$__range]))",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _bars(
                "Flaky cases per suite (within junit.flaky_window)",
                "short",
                _target(
                    f"max by (suite) (cicd_test_suite_flaky_cases{{{q.nobranch}}})",
                    "{{suite}}",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _ts(
                "Flaky occurrences per 1000 case runs",
                "short",
                _target(
                    f"1000 * sum by (suite) (increase(cicd_test_case_flaky_total{{{q.nobranch}}}[6h])) "
                    f'/ sum by (suite) (increase(cicd_test_cases_total{{{q.nobranch}, result=~"passed|failed|error"}}[6h]))',
                    "{{suite}}",
                ),
                w=24,
            )
        )
    )


def exporter(k: Knobs) -> dashboard.Dashboard:
    sel = k.selector
    board = (
        dashboard.Dashboard("ci-pipeline-exporter health")
        .uid(DASHBOARD_UIDS["exporter"])
        .description("Is the exporter polling, how much API it spends, how much budget is left.")
        .tags(["ci-pipeline-exporter"])
        .editable()
        .time("now-6h", "now")
        .refresh("30s")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
    )
    return (
        board.with_panel(
            _ts(
                "Up by source",
                "short",
                _target(f"max by (source) (ci_pipeline_exporter_up{{{sel}}})", "{{source}}"),
            )
        )
        .with_panel(
            _ts(
                "Age of the last successful poll",
                "s",
                _target(
                    f"time() - max by (source) (ci_pipeline_exporter_last_success_timestamp_seconds{{{sel}}})",
                    "{{source}}",
                ),
            )
        )
        .with_panel(
            _ts(
                "Poll duration p90",
                "s",
                _target(
                    f"histogram_quantile(0.9, sum by (source, le) (rate(ci_pipeline_exporter_poll_duration_seconds_bucket{{{sel}}}[$__rate_interval])))",
                    "{{source}}",
                ),
            )
        )
        .with_panel(
            _ts(
                "API requests by code",
                "reqps",
                _target(
                    f"sum by (api, code) (rate(ci_pipeline_exporter_api_requests_total{{{sel}}}[$__rate_interval]))",
                    "{{api}} {{code}}",
                ),
            )
        )
        .with_panel(
            _stat(
                "Share answered 304 (ETag cache)",
                "percentunit",
                _target(
                    f'sum(increase(ci_pipeline_exporter_api_requests_total{{{sel}, code="304"}}[$__range])) / '
                    f"sum(increase(ci_pipeline_exporter_api_requests_total{{{sel}}}[$__range]))",
                    instant=True,
                ),
            )
        )
        .with_panel(
            _ts(
                "GitHub rate limit remaining",
                "short",
                _target(
                    f"max by (resource) (ci_pipeline_exporter_github_rate_limit_remaining{{{sel}}})",
                    "{{resource}} remaining",
                    "A",
                ),
                _target(
                    f"max by (resource) (ci_pipeline_exporter_github_rate_limit_limit{{{sel}}})",
                    "{{resource}} limit",
                    "B",
                ),
            )
        )
        .with_panel(
            _ts(
                "Series per metric (the cap: ci_pipeline_exporter_series_limit)",
                "short",
                _target(
                    f"max by (metric) (ci_pipeline_exporter_series{{{sel}}})", "{{metric}}", "A"
                ),
                _target(f"max(ci_pipeline_exporter_series_limit{{{sel}}})", "cap", "B"),
            )
        )
        .with_panel(
            _ts(
                'Observations folded into "other" and series expired (1h)',
                "short",
                _target(
                    f"sum by (metric) (increase(ci_pipeline_exporter_series_dropped_total{{{sel}}}[1h]))"
                    # Nothing folded yet is 0 per metric, not an empty panel.
                    f" or sum by (metric) (0 * ci_pipeline_exporter_series{{{sel}}})",
                    "folded {{metric}}",
                    "A",
                ),
                _target(
                    f"sum by (metric) (increase(ci_pipeline_exporter_series_expired_total{{{sel}}}[1h]))"
                    f" or sum by (metric) (0 * ci_pipeline_exporter_series{{{sel}}})",
                    "expired {{metric}}",
                    "B",
                ),
            )
        )
        .with_panel(
            _ts(
                "Poll errors by reason",
                "short",
                _target(
                    f"sum by (source, reason) (increase(ci_pipeline_exporter_poll_errors_total{{{sel}}}[1h]))"
                    # No error yet is 0 per source, not an empty panel.
                    f" or sum by (source) (0 * ci_pipeline_exporter_up{{{sel}}})",
                    "{{source}} {{reason}}",
                ),
            )
        )
    )


BUILDERS = {
    "pipeline": pipeline,
    "bottlenecks": bottlenecks,
    "build-cache": build_cache,
    "images": images,
    "tests": tests,
    "exporter": exporter,
}


def render(k: Knobs) -> dict[str, str]:
    """file name → JSON text of each dashboard."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    return {
        f"{name}.json": encoder.encode(build(k).build()) + "\n" for name, build in BUILDERS.items()
    }


def queries(document: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard JSON (panels and variables)."""
    found = []
    for panel in document.get("panels", []):
        for target in panel.get("targets", []) or []:
            if target.get("expr"):
                found.append(target["expr"])
    return found
