"""What each section says when it has no data: the config (or the command) that enables it."""

from __future__ import annotations

TARGET = (
    "No target for this pipeline: add targets[] (repository, workflow, branch, target and "
    "baseline bounds) to the exporter's config."
)
BASELINE = "No baseline: add targets[].baseline to compare against the pipeline before the plan."
PATH = "No successful run with a critical path in this period yet."
PATH_PROMETHEUS = (
    "No per-job critical path in Prometheus: cicd_pipeline_run_last_critical_path_job_seconds "
    "comes from scraping the exporter (backfill writes histograms only)."
)
SLOWEST_JOBS = (
    "The critical path's jobs are not known in this period (see above): the slowest jobs instead."
)
OPPORTUNITIES_NO_PATH = (
    "Opportunities are found along the critical path, whose jobs are not known in this period: "
    "cicd_pipeline_run_last_critical_path_job_seconds comes from scraping the exporter."
)
GRAPH_STORE = (
    "No needs: graph in the state store yet: the exporter reads the workflow file at each run's "
    "head_sha (contents API, a token with contents:read)."
)
GRAPH_PROMETHEUS = (
    "The needs: graph is kept in the exporter's state store: run "
    "`ci-pipeline-exporter report --config FILE` for it."
)
BUILDKIT = (
    "No BuildKit output for this job: add it to github.repositories[].logs.jobs "
    '(e.g. ["build*"]) to see its Dockerfile instructions and cache.'
)
CACHE = (
    "No BuildKit or actions/cache data: add the build jobs to github.repositories[].logs.jobs "
    '(e.g. ["build*"]).'
)
CACHE_USAGE = (
    "No Actions cache usage: keep github.repositories[].actions_cache.enabled (the default) "
    "with a token that can read actions."
)
IMAGES = (
    "No image sizes: add registries[].images (with a set: to compare the total against the "
    "unique bytes)."
)
TESTS = (
    "No test reports: set github.repositories[].junit.artifacts to the artifacts that hold "
    'JUnit XML (e.g. ["junit*"]).'
)
TREND = (
    "The trend needs history: `ci-pipeline-exporter report --prometheus URL --since 56d` "
    "(Prometheus scraping the exporter, or loaded with `backfill`)."
)
TREND_SHORT = "A weekly trend needs a longer window: `--since 14d` or more."
MONTH = (
    "Per month needs a time window: `ci-pipeline-exporter report --prometheus URL --since 30d`; "
    "the state store holds totals, not times."
)
OPPORTUNITIES = "No opportunity found in this period's data."
EMPTY_STORE = [
    "No completed run in the state store yet.",
    "Run `ci-pipeline-exporter serve --config FILE` (or `once`): each poll records the runs "
    "completed since github.lookback (24h by default); this page fills as they arrive.",
    "Or try it with simulated data: `make demo`, then open /report.",
]
EMPTY_PROMETHEUS = [
    "Prometheus has no cicd_pipeline_run_duration_seconds in this window yet.",
    "Scrape the exporter (`ci-pipeline-exporter serve`, job ci-pipeline-exporter), or load "
    "history with `ci-pipeline-exporter backfill --since 30d --output history.om` and "
    "`promtool tsdb create-blocks-from openmetrics history.om DATA_DIR`.",
]
