"""Every threshold, window, selector and UID of the shipped rules and dashboards, in one place.

`Knobs()` are the defaults; `Knobs.for_tests()` shortens the windows (seconds instead of hours and
days) so a real Prometheus can prove the alerts end to end in a test."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Knobs:
    # The Prometheus job name of the exporter (Helm chart and quickstart use this one).
    selector: str = 'job="ci-pipeline-exporter"'
    grafana_url: str = "http://localhost:3000"
    runbook_url: str = (
        "https://github.com/ci-pipeline-exporter/ci-pipeline-exporter/blob/main/grafana/runbook.md"
    )

    # CIPipelineAboveTarget
    above_target_window: str = "6h"
    above_target_min_runs: int = 3
    above_target_for: str = "15m"
    # CIPipelineDurationRegression / CIJobDurationRegression
    regression_recent: str = "24h"
    regression_baseline: str = "7d"
    regression_factor: float = 1.2
    job_regression_factor: float = 1.25
    regression_min_runs: int = 5
    regression_for: str = "30m"
    # CIJobQueueTimeHigh
    queue_window: str = "1h"
    queue_p90_seconds: float = 120
    queue_for: str = "15m"
    # CIJobsQueuedTooLong (live, from workflow_job webhooks)
    queued_too_long_seconds: float = 900
    queued_too_long_for: str = "5m"
    # CIBuildCacheHitRatioLow
    cache_hit_window: str = "6h"
    cache_hit_min_ratio: float = 0.5
    cache_hit_for: str = "30m"
    # CIActionsCacheNearLimit
    actions_cache_ratio: float = 0.9
    actions_cache_for: str = "30m"
    # CIImageSizeGrowth
    image_growth_offset: str = "7d"
    image_growth_factor: float = 1.1
    image_growth_for: str = "1h"
    # CIPipelineExporterDown / Stale
    exporter_down_for: str = "15m"
    stale_factor: float = 3
    stale_for: str = "5m"
    # CIGitHubRateLimitLow
    rate_limit_ratio: float = 0.1
    rate_limit_for: str = "10m"
    # CIPipelineExporterSeriesNearCap
    series_near_cap_ratio: float = 0.8
    series_near_cap_for: str = "1h"
    # CITestFlakyRateRising
    flaky_recent: str = "24h"
    flaky_baseline: str = "7d"
    flaky_factor: float = 2
    flaky_min_occurrences: int = 3
    flaky_for: str = "30m"
    # Recording rules: the percentile window of the dashboards' duration panels.
    recording_window: str = "1d"
    progress_window: str = "7d"

    @classmethod
    def for_tests(cls) -> Knobs:
        return replace(
            cls(),
            above_target_window="30s",
            above_target_for="0s",
            regression_recent="12s",
            regression_baseline="60s",
            regression_for="0s",
            queue_window="30s",
            queue_for="0s",
            queued_too_long_for="0s",
            cache_hit_window="30s",
            cache_hit_for="0s",
            actions_cache_for="0s",
            image_growth_offset="30s",
            image_growth_for="0s",
            exporter_down_for="5s",
            stale_for="0s",
            rate_limit_for="0s",
            series_near_cap_for="0s",
            flaky_recent="12s",
            flaky_baseline="60s",
            flaky_for="0s",
            recording_window="30s",
            progress_window="60s",
        )


DASHBOARD_UIDS = {
    "pipeline": "cipe-pipeline-vs-target",
    "bottlenecks": "cipe-bottlenecks",
    "build-cache": "cipe-build-cache",
    "images": "cipe-images",
    "tests": "cipe-tests",
    "exporter": "cipe-exporter-health",
}
