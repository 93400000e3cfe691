"""The exporter's own metrics (api requests, poll health, rate limit), kept apart from the domain
metrics: plain prometheus-client objects in the app's private registry, reset on restart."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from exporter import __version__
from exporter import metrics as m

# `_created` series add nothing for polled counters and double the exposition.
disable_created_metrics()  # type: ignore[no-untyped-call]


def _bare(spec: m.MetricSpec) -> str:
    # prometheus-client appends _total to counters itself.
    return spec.name.removesuffix("_total")


class Telemetry:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.build_info = Gauge(
            m.BUILD_INFO.name, m.BUILD_INFO.help, m.BUILD_INFO.labels, registry=registry
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.up = Gauge(m.UP.name, m.UP.help, m.UP.labels, registry=registry)
        self.last_success = Gauge(
            m.LAST_SUCCESS.name, m.LAST_SUCCESS.help, m.LAST_SUCCESS.labels, registry=registry
        )
        self.poll_duration = Histogram(
            m.POLL_DURATION.name,
            m.POLL_DURATION.help,
            m.POLL_DURATION.labels,
            buckets=m.POLL_DURATION.buckets,
            registry=registry,
        )
        self.poll_errors = Counter(
            _bare(m.POLL_ERRORS), m.POLL_ERRORS.help, m.POLL_ERRORS.labels, registry=registry
        )
        self.api_requests = Counter(
            _bare(m.API_REQUESTS), m.API_REQUESTS.help, m.API_REQUESTS.labels, registry=registry
        )
        self.rate_remaining = Gauge(
            m.RATE_REMAINING.name, m.RATE_REMAINING.help, m.RATE_REMAINING.labels, registry=registry
        )
        self.rate_limit = Gauge(
            m.RATE_LIMIT.name, m.RATE_LIMIT.help, m.RATE_LIMIT.labels, registry=registry
        )
        self.poll_interval = Gauge(
            m.POLL_INTERVAL.name, m.POLL_INTERVAL.help, m.POLL_INTERVAL.labels, registry=registry
        )
        self.state_rebuilds = Counter(
            _bare(m.STATE_REBUILDS), m.STATE_REBUILDS.help, registry=registry
        )
        self.webhook_events = Counter(
            _bare(m.WEBHOOK_EVENTS),
            m.WEBHOOK_EVENTS.help,
            m.WEBHOOK_EVENTS.labels,
            registry=registry,
        )
        self.polls_deferred = Counter(
            _bare(m.POLLS_DEFERRED),
            m.POLLS_DEFERRED.help,
            m.POLLS_DEFERRED.labels,
            registry=registry,
        )
