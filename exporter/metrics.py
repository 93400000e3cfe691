"""Every metric's name, type, help, labels and buckets: the single source of truth.

Collectors, the docs generator (`docs/metrics.md`) and the dashboard/rule checks all read this.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# A summary here has no quantiles: `_sum` and `_count` only, for averages at two samples a series.
MetricType = Literal["histogram", "summary", "gauge", "counter"]

# Buckets sized to what each histogram measures (each bucket is a sample per series).
# Runs: 2 min to 2 h; a target's and baseline's bounds are added to its own series.
RUN_BUCKETS = (120, 300, 600, 900, 1200, 1800, 3600, 7200)
# Jobs: 30 s to an hour.
JOB_BUCKETS = (30, 60, 120, 300, 600, 900, 1200, 1800, 3600)
# Waiting for a runner: seconds to half an hour.
QUEUE_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800)
# Steps and Dockerfile instructions: a second to half an hour.
STEP_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800)
POLL_BUCKETS = (0.1, 0.5, 1, 5, 30, 120)


@dataclass(frozen=True)
class ScopedCap:
    """At most N distinct values of `labels` within each value of `scope` (N comes from the config,
    by `name`); further values fold into "other" and are counted like the metric-wide cap."""

    name: str
    scope: tuple[str, ...]
    labels: tuple[str, ...]


SUITES_CAP = ScopedCap("suites", ("repository", "workflow"), ("suite",))
# Runner label sets (runs-on labels, sorted): bounded per repository; a runner's name never is a label.
RUNNERS_CAP = ScopedCap("runners", ("repository",), ("runner_labels",))
INSTRUCTIONS_CAP = ScopedCap(
    "instructions", ("repository", "workflow", "job_name"), ("stage", "instruction")
)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    # Labels whose values fold into "other" when the metric reaches its series cap.
    foldable: tuple[str, ...] = ()
    # Whether a target's and baseline's bounds are added to the buckets of its series.
    target_buckets: bool = False
    cap: ScopedCap | None = None

    def series_names(self) -> tuple[str, ...]:
        if self.type == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        if self.type == "summary":
            return (f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)

    def samples_per_series(self, extra_buckets: int = 0) -> int:
        """Samples one label set costs in the exposition."""
        if self.type == "histogram":
            return len(self.buckets) + extra_buckets + 3  # buckets, +Inf, _sum, _count
        return 2 if self.type == "summary" else 1


_POLL_NOTE = "Updated by a background poll of the GitHub API (github.poll_interval)."

RUN_DURATION = MetricSpec(
    "cicd_pipeline_run_duration_seconds",
    "histogram",
    "Wall time of a completed run attempt: first job start (or run_started_at) to last job "
    "completion. " + _POLL_NOTE,
    ("repository", "workflow", "branch", "event", "result"),
    RUN_BUCKETS,
    target_buckets=True,
)
RUN_CRITICAL_PATH = MetricSpec(
    "cicd_pipeline_run_critical_path_seconds",
    "histogram",
    "Execution seconds along a successful run's critical path (the needs: chain, or inferred from "
    "job timestamps), ending at the last job to finish. " + _POLL_NOTE,
    ("repository", "workflow", "branch"),
    RUN_BUCKETS,
    target_buckets=True,
)
RUN_CRITICAL_PATH_SOURCE = MetricSpec(
    "cicd_pipeline_run_critical_path_source_total",
    "counter",
    "Completed run attempts by how their critical path was found: needs (the workflow file's "
    "needs: graph) or timestamps (inferred when the file could not be read or mapped).",
    ("repository", "workflow", "source"),
)
RUN_LAST_DURATION = MetricSpec(
    "cicd_pipeline_run_last_duration_seconds",
    "gauge",
    "Wall time of the latest completed run. " + _POLL_NOTE,
    ("repository", "workflow", "branch"),
)
RUN_LAST_CRITICAL_PATH_JOB = MetricSpec(
    "cicd_pipeline_run_last_critical_path_job_seconds",
    "gauge",
    "Execution seconds of each critical-path job in the latest successful run.",
    ("repository", "workflow", "branch", "job_name"),
    foldable=("job_name",),
)
RUN_ACTIVE = MetricSpec(
    "cicd_pipeline_run_active",
    "gauge",
    "Runs now pending (queued, waiting, requested) or executing (in_progress). " + _POLL_NOTE,
    ("repository", "workflow", "state"),
)
JOB_DURATION = MetricSpec(
    "cicd_pipeline_task_run_duration_seconds",
    "histogram",
    "Job execution: started_at to completed_at (all branches).",
    ("repository", "workflow", "job_name", "result"),
    JOB_BUCKETS,
    foldable=("job_name",),
)
JOB_QUEUE = MetricSpec(
    "cicd_pipeline_task_run_queue_seconds",
    "histogram",
    "Job queue time (created_at to started_at) by the runner labels the job asked for (runs-on, "
    "sorted, joined with ','; limits.max_runner_label_sets per repository).",
    ("repository", "workflow", "runner_labels"),
    QUEUE_BUCKETS,
    foldable=("runner_labels",),
    cap=RUNNERS_CAP,
)
JOB_LAST_DURATION = MetricSpec(
    "cicd_pipeline_task_run_last_duration_seconds",
    "gauge",
    "Execution seconds of the latest completed run of each job.",
    ("repository", "workflow", "branch", "job_name"),
    foldable=("job_name",),
)
STEP_DURATION = MetricSpec(
    "cicd_pipeline_task_step_duration_seconds",
    "summary",
    "Step execution: started_at to completed_at (0 for steps without timestamps); sum and count, "
    "for averages.",
    ("repository", "workflow", "job_name", "step", "result"),
    foldable=("job_name", "step"),
)
STEP_LAST_DURATION = MetricSpec(
    "cicd_pipeline_task_step_last_duration_seconds",
    "gauge",
    "Execution seconds of each step in the latest completed run of its job.",
    ("repository", "workflow", "job_name", "step"),
    foldable=("job_name", "step"),
)
STEP_DISTRIBUTION = MetricSpec(
    "cicd_pipeline_task_step_duration_distribution_seconds",
    "histogram",
    "Step execution as a histogram, for the jobs named in metrics.step_histograms (percentiles).",
    ("repository", "workflow", "job_name", "step", "result"),
    STEP_BUCKETS,
    foldable=("job_name", "step"),
)
_WEBHOOK_NOTE = "From workflow_job webhooks (github.webhooks); the reconciler closes jobs whose completion was missed."
TASK_ACTIVE = MetricSpec(
    "cicd_pipeline_task_run_active",
    "gauge",
    "Jobs now queued (waiting for a runner), waiting (for a deployment protection rule) or "
    "executing, by the runner labels they asked for. " + _WEBHOOK_NOTE,
    ("repository", "workflow", "runner_labels", "state"),
    foldable=("runner_labels",),
    cap=RUNNERS_CAP,
)
TASK_OLDEST_QUEUED = MetricSpec(
    "cicd_pipeline_task_run_oldest_queued_timestamp_seconds",
    "gauge",
    "When the longest-waiting queued job of a set of runner labels was queued (Unix time); "
    "time() minus this is how long it has waited. " + _WEBHOOK_NOTE,
    ("repository", "runner_labels"),
    foldable=("runner_labels",),
    cap=RUNNERS_CAP,
)
TARGET = MetricSpec(
    "cicd_pipeline_target_duration_seconds",
    "gauge",
    "Configured target for the run duration (targets[].target).",
    ("repository", "workflow", "branch", "bound"),
)
BASELINE = MetricSpec(
    "cicd_pipeline_baseline_duration_seconds",
    "gauge",
    "Configured baseline for the run duration (targets[].baseline).",
    ("repository", "workflow", "branch", "bound"),
)

RUN_TARGET = MetricSpec(
    "cicd_pipeline_run_target_total",
    "counter",
    "Successful runs of a (repository, workflow, branch) that has a target, by outcome: within "
    "(duration ≤ the target's upper bound) or above.",
    ("repository", "workflow", "branch", "outcome"),
)

PIPELINE_METRICS = (
    RUN_DURATION,
    RUN_CRITICAL_PATH,
    RUN_CRITICAL_PATH_SOURCE,
    RUN_LAST_DURATION,
    RUN_LAST_CRITICAL_PATH_JOB,
    RUN_ACTIVE,
    JOB_DURATION,
    JOB_QUEUE,
    JOB_LAST_DURATION,
    STEP_DURATION,
    STEP_LAST_DURATION,
    STEP_DISTRIBUTION,
    TASK_ACTIVE,
    TASK_OLDEST_QUEUED,
    TARGET,
    BASELINE,
    RUN_TARGET,
)

TEST_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 1200, 3600)
_JUNIT_NOTE = "From JUnit XML in the run's artifacts (github.repositories[].junit)."

TEST_SUITE_DURATION = MetricSpec(
    "cicd_test_suite_duration_seconds",
    "histogram",
    "A test suite's (app's) total case time in one run attempt. " + _JUNIT_NOTE,
    ("repository", "workflow", "suite"),
    TEST_BUCKETS,
    foldable=("suite",),
    cap=SUITES_CAP,
)
TEST_SUITE_LAST = MetricSpec(
    "cicd_test_suite_last_duration_seconds",
    "gauge",
    "A test suite's (app's) total case time in the latest run attempt with a report. "
    + _JUNIT_NOTE,
    ("repository", "workflow", "suite"),
    foldable=("suite",),
    cap=SUITES_CAP,
)
TEST_CASES = MetricSpec(
    "cicd_test_cases_total",
    "counter",
    "Test cases by result (passed, failed, error, skipped). " + _JUNIT_NOTE,
    ("repository", "workflow", "suite", "result"),
    foldable=("suite",),
    cap=SUITES_CAP,
)
TEST_CASE_FLAKY = MetricSpec(
    "cicd_test_case_flaky_total",
    "counter",
    "Flaky occurrences: a test case's failure (or error) in a run attempt on a head SHA where the "
    "case also passed in another attempt within junit.flaky_window, counted once when both are "
    "known. Case names are never labels (`analyze flaky` lists the cases). " + _JUNIT_NOTE,
    ("repository", "workflow", "suite"),
    foldable=("suite",),
    cap=SUITES_CAP,
)
TEST_RERUNS = MetricSpec(
    "cicd_test_case_reruns_total",
    "counter",
    "Run attempts that re-ran an attempt in which a test case failed or errored (attempt n + 1 "
    "after attempt n's report held a failure). " + _JUNIT_NOTE,
    ("repository", "workflow"),
)
TEST_SUITE_FLAKY_CASES = MetricSpec(
    "cicd_test_suite_flaky_cases",
    "gauge",
    "Distinct test cases of the suite with a flaky occurrence within junit.flaky_window, as of "
    "the latest report. " + _JUNIT_NOTE,
    ("repository", "workflow", "suite"),
    foldable=("suite",),
    cap=SUITES_CAP,
)
TEST_METRICS = (
    TEST_SUITE_DURATION,
    TEST_SUITE_LAST,
    TEST_CASES,
    TEST_CASE_FLAKY,
    TEST_RERUNS,
    TEST_SUITE_FLAKY_CASES,
)

BUILD_BUCKETS = (30, 60, 120, 300, 600, 1200, 1800, 3600)
CACHE_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
_LOG_NOTE = "From the BuildKit output in job logs (github.repositories[].logs.jobs)."

BUILDKIT_BUILD = MetricSpec(
    "buildkit_build_duration_seconds",
    "histogram",
    "One docker build/bake found in a job log (first to last line of its output). " + _LOG_NOTE,
    ("repository", "workflow", "job_name", "cache_backend"),
    BUILD_BUCKETS,
    foldable=("job_name",),
)
BUILDKIT_IMPORT = MetricSpec(
    "buildkit_cache_import_seconds",
    "histogram",
    "Time importing cache manifests in one build, by backend (gha, registry, local, s3, azblob, "
    "inline, none, unknown). " + _LOG_NOTE,
    ("repository", "workflow", "job_name", "cache_backend"),
    CACHE_BUCKETS,
    foldable=("job_name",),
)
BUILDKIT_EXPORT = MetricSpec(
    "buildkit_cache_export_seconds",
    "histogram",
    "Time exporting the build cache in one build, by backend. " + _LOG_NOTE,
    ("repository", "workflow", "job_name", "cache_backend"),
    CACHE_BUCKETS,
    foldable=("job_name",),
)
BUILDKIT_STEPS = MetricSpec(
    "buildkit_steps_total",
    "counter",
    "Dockerfile instruction vertices by result: cached, executed, errored, canceled ([internal] "
    "and [auth] vertices are not steps). " + _LOG_NOTE,
    ("repository", "workflow", "job_name", "result"),
    foldable=("job_name",),
)
BUILDKIT_HIT_RATIO = MetricSpec(
    "buildkit_last_cache_hit_ratio",
    "gauge",
    "cached ÷ (cached + executed) steps in the latest build of the job. " + _LOG_NOTE,
    ("repository", "workflow", "job_name"),
    foldable=("job_name",),
)
BUILDKIT_STEP_DURATION = MetricSpec(
    "buildkit_step_duration_seconds",
    "histogram",
    "Executed Dockerfile instructions, normalised to `RUN pip install` style (≤ 60 characters), "
    "capped per job (logs.max_instructions). " + _LOG_NOTE,
    ("repository", "workflow", "job_name", "stage", "instruction"),
    STEP_BUCKETS,
    foldable=("stage", "instruction"),
    cap=INSTRUCTIONS_CAP,
)
CACHE_RESTORES = MetricSpec(
    "github_actions_cache_restores_total",
    "counter",
    "actions/cache restores found in job logs, by result (hit, miss). " + _LOG_NOTE,
    ("repository", "workflow", "job_name", "result"),
    foldable=("job_name",),
)
CACHE_RESTORE_SECONDS = MetricSpec(
    "github_actions_cache_restore_seconds",
    "histogram",
    "Durations (from the jobs API) of the steps that restored an actions/cache.",
    ("repository", "workflow", "job_name"),
    CACHE_BUCKETS,
    foldable=("job_name",),
)
_CACHE_NOTE = "Polled every github.repositories[].actions_cache.poll_interval (GitHub refreshes it about every 5 minutes)."
CACHE_USAGE = MetricSpec(
    "github_actions_cache_usage_bytes",
    "gauge",
    "Active Actions cache size (/actions/cache/usage). " + _CACHE_NOTE,
    ("repository",),
)
CACHE_ENTRIES = MetricSpec(
    "github_actions_cache_entries",
    "gauge",
    "Active Actions cache entries (/actions/cache/usage). " + _CACHE_NOTE,
    ("repository",),
)
CACHE_LIMIT = MetricSpec(
    "github_actions_cache_limit_bytes",
    "gauge",
    "Configured Actions cache limit (actions_cache.limit_bytes, default 10 GiB).",
    ("repository",),
)
CACHE_KIND_BYTES = MetricSpec(
    "github_actions_cache_entries_bytes",
    "gauge",
    "Bytes of the listed cache entries by kind: buildkit (BuildKit's gha cache, keys buildkit-blob-… "
    "and index-buildkit-…) or other (/actions/caches). " + _CACHE_NOTE,
    ("repository", "kind"),
)
BUILD_METRICS = (
    BUILDKIT_BUILD,
    BUILDKIT_IMPORT,
    BUILDKIT_EXPORT,
    BUILDKIT_STEPS,
    BUILDKIT_HIT_RATIO,
    BUILDKIT_STEP_DURATION,
    CACHE_RESTORES,
    CACHE_RESTORE_SECONDS,
    CACHE_USAGE,
    CACHE_ENTRIES,
    CACHE_LIMIT,
    CACHE_KIND_BYTES,
)

_REGISTRY_NOTE = "Polled from the registry every registries[].poll_interval."
IMAGE_SIZE = MetricSpec(
    "container_image_size_bytes",
    "gauge",
    "Compressed image size per platform: config + layers as pushed. A templated tag keeps its "
    "template ({head_sha:7}) as the label and follows the latest successful run. " + _REGISTRY_NOTE,
    ("registry", "image", "tag", "platform"),
)
IMAGE_LAYERS = MetricSpec(
    "container_image_layers",
    "gauge",
    "Layer count per platform. " + _REGISTRY_NOTE,
    ("registry", "image", "tag", "platform"),
)
IMAGE_SET_SIZE = MetricSpec(
    "container_image_set_size_bytes",
    "gauge",
    "Sum over a set's images (kind=total) and with layers shared between them counted once "
    "(kind=unique). " + _REGISTRY_NOTE,
    ("set", "kind"),
)
IMAGE_METRICS = (IMAGE_SIZE, IMAGE_LAYERS, IMAGE_SET_SIZE)

WORKER_COUNT = MetricSpec(
    "cicd_worker_count",
    "gauge",
    "Self-hosted runners by runner group and state: available (online, idle), busy, offline "
    "(OpenTelemetry cicd.worker.count). Polled every github.runners[].poll_interval.",
    ("scope", "runner_group", "state"),
)
WORKER_METRICS = (WORKER_COUNT,)

BUILD_INFO = MetricSpec(
    "ci_pipeline_exporter_build_info",
    "gauge",
    "Always 1; the exporter's version.",
    ("version", "python_version"),
)
UP = MetricSpec(
    "ci_pipeline_exporter_up",
    "gauge",
    "1 when the source's last poll succeeded, else 0.",
    ("source",),
)
LAST_SUCCESS = MetricSpec(
    "ci_pipeline_exporter_last_success_timestamp_seconds",
    "gauge",
    "End of the source's last successful poll (Unix time).",
    ("source",),
)
POLL_DURATION = MetricSpec(
    "ci_pipeline_exporter_poll_duration_seconds",
    "histogram",
    "Duration of one poll of a source.",
    ("source",),
    POLL_BUCKETS,
)
POLL_ERRORS = MetricSpec(
    "ci_pipeline_exporter_poll_errors_total",
    "counter",
    "Failed polls and skipped items by reason (http_5xx, rate_limited, transport, malformed, ...).",
    ("source", "reason"),
)
API_REQUESTS = MetricSpec(
    "ci_pipeline_exporter_api_requests_total",
    "counter",
    "HTTP requests to the GitHub API and registries by templated endpoint and status code "
    "(304 = answered from the ETag cache).",
    ("api", "endpoint", "code"),
)
RATE_REMAINING = MetricSpec(
    "ci_pipeline_exporter_github_rate_limit_remaining",
    "gauge",
    "x-ratelimit-remaining of the latest GitHub response.",
    ("resource",),
)
RATE_LIMIT = MetricSpec(
    "ci_pipeline_exporter_github_rate_limit_limit",
    "gauge",
    "x-ratelimit-limit of the latest GitHub response.",
    ("resource",),
)
POLL_INTERVAL = MetricSpec(
    "ci_pipeline_exporter_poll_interval_seconds",
    "gauge",
    "The configured poll interval of the source (for staleness alerts).",
    ("source",),
)
SERIES_DROPPED = MetricSpec(
    "ci_pipeline_exporter_series_dropped_total",
    "counter",
    'Observations whose labels were folded into "other" because the metric reached its '
    "series cap (limits.max_series_per_metric).",
    ("metric",),
)
RUNS_OBSERVED = MetricSpec(
    "ci_pipeline_exporter_runs_observed_total",
    "counter",
    "Completed run attempts recorded (each exactly once, kept across restarts).",
    ("repository",),
)
POLLS_DEFERRED = MetricSpec(
    "ci_pipeline_exporter_polls_deferred_total",
    "counter",
    "Polls skipped to save GitHub rate-limit budget (remaining below the reserve, or slowed).",
    ("source",),
)

WEBHOOK_EVENTS = MetricSpec(
    "ci_pipeline_exporter_webhook_events_total",
    "counter",
    "Webhook deliveries by event, action and outcome: recorded, duplicate (already counted), "
    "ignored (not configured, or nothing to record), rejected (bad signature, body, method or "
    "size), forwarded (to the shard that owns the repository), failed (accepted, not recorded).",
    ("event", "action", "outcome"),
)
SERIES_EXPIRED = MetricSpec(
    "ci_pipeline_exporter_series_expired_total",
    "counter",
    "Label sets dropped after limits.series_ttl without an update (a renamed job, a deleted "
    "branch, a removed step).",
    ("metric",),
)
SERIES = MetricSpec(
    "ci_pipeline_exporter_series",
    "gauge",
    "Label sets of each metric now in the store (the cap is ci_pipeline_exporter_series_limit).",
    ("metric",),
)
SERIES_LIMIT = MetricSpec(
    "ci_pipeline_exporter_series_limit",
    "gauge",
    'limits.max_series_per_metric: beyond it, new label sets fold into "other".',
    (),
)
STATE_REBUILDS = MetricSpec(
    "ci_pipeline_exporter_state_rebuilds_total",
    "counter",
    "Damaged state files moved aside at start (state.on_damage: rebuild); the metrics restart "
    "from the lookback window. Counts since the process started (1 after a rebuild, 0 again "
    "after the next restart): alert on increase() or on the error log.",
    (),
)
TEST_CASES_HELD = MetricSpec(
    "ci_pipeline_exporter_test_cases",
    "gauge",
    "Test cases in the repository's flaky-test history (at most junit.max_cases).",
    ("repository",),
)
TEST_CASES_DROPPED = MetricSpec(
    "ci_pipeline_exporter_test_cases_dropped_total",
    "counter",
    "Test cases left out of the flaky-test history: evicted (the least recently seen, beyond "
    "junit.max_cases per repository) or overflow (case results of a report with more distinct "
    "cases than junit.max_cases).",
    ("repository", "reason"),
)

EXPORTER_METRICS = (
    BUILD_INFO,
    UP,
    LAST_SUCCESS,
    POLL_DURATION,
    POLL_ERRORS,
    API_REQUESTS,
    RATE_REMAINING,
    RATE_LIMIT,
    POLL_INTERVAL,
    SERIES_DROPPED,
    RUNS_OBSERVED,
    POLLS_DEFERRED,
    WEBHOOK_EVENTS,
    SERIES_EXPIRED,
    SERIES,
    SERIES_LIMIT,
    STATE_REBUILDS,
    TEST_CASES_HELD,
    TEST_CASES_DROPPED,
)

ALL_METRICS: tuple[MetricSpec, ...] = (
    PIPELINE_METRICS
    + BUILD_METRICS
    + TEST_METRICS
    + IMAGE_METRICS
    + WORKER_METRICS
    + EXPORTER_METRICS
)


def all_series_names() -> set[str]:
    """Every sample name the exporter can emit (histograms as _bucket/_sum/_count)."""
    names: set[str] = set()
    for spec in ALL_METRICS:
        names.update(spec.series_names())
    return names


def with_bounds(buckets: Iterable[float], extra: Iterable[float]) -> tuple[float, ...]:
    """Bucket bounds including every configured target and baseline bound."""
    return tuple(sorted({float(b) for b in buckets} | {float(b) for b in extra}))
