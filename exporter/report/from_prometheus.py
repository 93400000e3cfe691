"""The report's input from Prometheus' HTTP API: each histogram and counter as the difference of
its cumulative values between two moments (summed over instances, so shards add up), gauges as
their value at the end of a period.

The moments are a grid ending now: `--since` in steps of a week (or one step when shorter). The
last step is "now", the first the baseline period, every step a week of the trend. A cumulative
value at a moment is the series' last sample within the step before it (`last_over_time`), which
also reads backfilled history, whose samples are only at each run's completion.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import httpx

from exporter import metrics as m
from exporter.report.inputs import Period, ReportInput
from exporter.report.samples import Hist, Labels, Samples

WEEK = 7 * 86400.0
DAY = 86400.0
CUMULATIVE = tuple(
    spec
    for spec in (*m.PIPELINE_METRICS, *m.BUILD_METRICS, *m.TEST_METRICS, *m.IMAGE_METRICS)
    if spec.type in ("histogram", "summary", "counter")
)
GAUGES = tuple(
    spec
    for spec in (*m.PIPELINE_METRICS, *m.BUILD_METRICS, *m.TEST_METRICS, *m.IMAGE_METRICS)
    if spec.type == "gauge"
)


class PrometheusError(Exception):
    """Prometheus can't be queried: one line for the operator."""


class PrometheusClient:
    def __init__(
        self, url: str, *, timeout: float = 30.0, http: httpx.Client | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._http = http or httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        """An instant vector at `at`, as (labels, value)."""
        where = f"Prometheus at {self.url}"
        try:
            response = self._http.get(
                f"{self.url}/api/v1/query", params={"query": expr, "time": f"{at:.3f}"}
            )
        except httpx.HTTPError as exc:
            raise PrometheusError(f"cannot query {where}: {_reason(exc)}") from None
        body = _json(response)
        if response.status_code != 200 or body.get("status") != "success":
            detail = body.get("error") or response.reason_phrase or "no reason given"
            raise PrometheusError(f"{where} answered {response.status_code}: {str(detail)[:200]}")
        data = body.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "vector":
            raise PrometheusError(f"{where} did not answer with an instant vector")
        return [_sample(item, where) for item in data.get("result") or []]


def _reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    return exc.__class__.__name__


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _sample(item: Any, where: str) -> tuple[dict[str, str], float]:
    try:
        labels = {str(k): str(v) for k, v in item["metric"].items()}
        return labels, float(item["value"][1])
    except (KeyError, TypeError, ValueError, IndexError):
        raise PrometheusError(f"{where} answered a malformed sample") from None


def grid(since: float, end: float) -> list[float]:
    """Moments from `since` before `end` to `end`, a week apart (one step when shorter)."""
    step = min(since, WEEK)
    steps = max(1, math.ceil(since / step - 1e-9))
    return [end - (steps - k) * step for k in range(steps + 1)]


class Reader:
    """Cumulative values and gauges at given moments."""

    def __init__(self, client: PrometheusClient, lookback: float) -> None:
        self.client = client
        self.lookback = f"{max(1, int(lookback))}s"

    def _last(
        self, name: str, labels: Iterable[str], at: float
    ) -> list[tuple[dict[str, str], float]]:
        by = ", ".join(labels)
        return self.client.query(f"sum by ({by}) (last_over_time({name}[{self.lookback}]))", at)

    def cumulative(self, specs: Iterable[m.MetricSpec], at: float) -> Samples:
        samples = Samples()
        for spec in specs:
            if spec.type == "counter":
                for labels, value in self._last(spec.name, spec.labels, at):
                    samples.add_value(spec.name, labels, value)
                continue
            self._histogram(samples, spec, at)
        return samples

    def _histogram(self, samples: Samples, spec: m.MetricSpec, at: float) -> None:
        sums = {_key(labels): v for labels, v in self._last(f"{spec.name}_sum", spec.labels, at)}
        counts = {
            _key(labels): v for labels, v in self._last(f"{spec.name}_count", spec.labels, at)
        }
        buckets: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        if spec.type == "histogram":
            for labels, value in self._last(f"{spec.name}_bucket", (*spec.labels, "le"), at):
                bound = float(labels.pop("le", "nan"))
                if math.isfinite(bound):
                    buckets.setdefault(_key(labels), []).append((bound, value))
        for key, count in counts.items():
            pairs = sorted(buckets.get(key, []))
            hist = Hist(
                tuple(b for b, _ in pairs), tuple(c for _, c in pairs), count, sums.get(key, 0.0)
            )
            samples.add_hist(spec.name, dict(key), hist)

    def gauges(self, specs: Iterable[m.MetricSpec], at: float) -> Samples:
        samples = Samples()
        for spec in specs:
            by = ", ".join(spec.labels)
            for labels, value in self.client.query(f"max by ({by}) ({spec.name})", at):
                samples.add_value(spec.name, labels, value)
        return samples


def _key(labels: Labels) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def difference(end: Samples, start: Samples) -> Samples:
    """What happened between two cumulative states (series that restarted count from zero)."""
    out = Samples()
    for name, series in end.hists.items():
        before = {_key(labels): hist for labels, hist in start.hists.get(name, ())}
        for labels, hist in series:
            out.add_hist(name, labels, hist.minus(before.get(_key(labels), Hist())))
    for name, values in end.values.items():
        earlier = {_key(labels): value for labels, value in start.values.get(name, ())}
        for labels, value in values:
            previous = earlier.get(_key(labels), 0.0)
            out.add_value(name, labels, value - previous if value >= previous else value)
    return out


def merged(*parts: Samples) -> Samples:
    out = Samples()
    for part in parts:
        for name, series in part.hists.items():
            out.hists.setdefault(name, []).extend(series)
        for name, values in part.values.items():
            out.values.setdefault(name, []).extend(values)
    return out


def prometheus_input(
    client: PrometheusClient, since: float, end: float | None = None
) -> ReportInput:
    end = time.time() if end is None else end
    moments = grid(since, end)
    reader = Reader(client, max(moments[1] - moments[0], DAY))
    edges = sorted({0, 1, len(moments) - 2, len(moments) - 1})
    full = {i: reader.cumulative(CUMULATIVE, moments[i]) for i in edges}
    runs = {
        i: reader.cumulative((m.RUN_DURATION,), moments[i])
        for i in range(len(moments))
        if i not in full
    }
    runs.update(full)
    last = len(moments) - 1
    now = Period(
        merged(difference(full[last], full[last - 1]), reader.gauges(GAUGES, end)), moments[-2], end
    )
    baseline = None
    weeks = []
    if last >= 2:
        gauges = reader.gauges(GAUGES, moments[1])
        baseline = Period(merged(difference(full[1], full[0]), gauges), moments[0], moments[1])
        weeks = [
            Period(difference(runs[i], runs[i - 1]), moments[i - 1], moments[i])
            for i in range(1, last + 1)
        ]
    return ReportInput(
        source=f"Prometheus at {client.url}",
        kind="prometheus",
        generated_at=time.time(),
        now=now,
        baseline=baseline,
        weeks=weeks,
    )
