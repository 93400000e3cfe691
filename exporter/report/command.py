"""`ci-pipeline-exporter report`: from the state store (--config) or Prometheus (--prometheus URL),
to a file or stdout. Exit 0 written, 1 Prometheus unreachable or answering errors, 2 usage."""

from __future__ import annotations

import sys
from pathlib import Path

from exporter.config import ConfigError, check_base_url, load_config
from exporter.report import store_report
from exporter.report.build import build
from exporter.report.from_prometheus import PrometheusClient, PrometheusError, prometheus_input
from exporter.report.model import Report
from exporter.report.render import RENDERERS
from exporter.store import Store
from exporter.timeutil import parse_duration

EXIT_OK, EXIT_FAILED = 0, 1


def from_config(path: str) -> Report:
    config = load_config(path)
    state = config.state.path
    if state != ":memory:" and not Path(state).exists():
        # The empty state's page, and a line saying where it looked (a relative path is taken
        # from the current directory, not the config file's).
        where = Path(state).resolve()
        print(f"ci-pipeline-exporter: report: no state file at {where} yet", file=sys.stderr)
        return store_report(None, config)
    # Read only, without the lock: beside a running exporter (a weekly cron), never writing.
    store = Store(state, config.limits.max_series_per_metric, read_only=True)
    try:
        return store_report(store, config)
    finally:
        store.close()


def from_prometheus(url: str, since_text: str) -> Report:
    try:
        check_base_url(url, "put credentials in a reverse proxy, not the URL")
    except ValueError as exc:
        raise ConfigError(f"--prometheus: {exc}") from None
    try:
        since = parse_duration(since_text)
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    if since < 3600:
        raise ConfigError("--since: at least 1h")
    client = PrometheusClient(url)
    try:
        return build(prometheus_input(client, since))
    finally:
        client.close()


def run(config: str | None, prometheus: str | None, since: str, kind: str, output: str) -> int:
    try:
        report = from_prometheus(prometheus, since) if prometheus else from_config(str(config))
    except PrometheusError as exc:
        print(f"ci-pipeline-exporter: report: {exc}", file=sys.stderr)
        return EXIT_FAILED
    text = RENDERERS[kind](report)
    if output == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")
    return EXIT_OK
