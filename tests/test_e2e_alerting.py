"""End to end: the exporter in demo mode (regression scenario), a real Prometheus scraping it every
second with the shipped rules (windows shortened by the same generator), a real Alertmanager routing
to a webhook receiver in the test; then every dashboard panel query returns data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from grafana.dashboards import queries
from grafana.generate import ROOT as GRAFANA
from grafana.generate import rules_yaml
from grafana.knobs import Knobs
from tests.helpers import ROOT, free_port, simulator_cmd, wait_for
from tests.servers import alertmanager, prometheus, query, webhook_receiver

VARIABLES = {
    "$repository": "acme/webapp",
    "$workflow": "CI",
    "$branch": "main",
    "$job": "build-docker-image",
    "$image": ".*",
    "$__range": "1h",
    "$__rate_interval": "15s",
}


def fill(expr: str) -> str:
    for name, value in sorted(VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(name, value)
    return expr


@pytest.mark.integration
def test_regression_alert_reaches_alertmanager_and_every_panel_has_data(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(rules_yaml(Knobs.for_tests()))
    port = free_port()
    log = (tmp_path / "exporter.log").open("wb")
    demo = subprocess.Popen(
        simulator_cmd(
            "demo",
            "--scenario",
            "regression",
            "--speed",
            "1800",
            "--listen",
            f"127.0.0.1:{port}",
            "--log-format",
            "json",
        ),
        stdout=log,
        stderr=log,
        cwd=ROOT,
        env={**os.environ},
    )
    try:
        with (
            webhook_receiver() as (webhook, received),
            alertmanager(tmp_path, webhook) as am,
            prometheus(
                tmp_path, targets=[f"127.0.0.1:{port}"], rules=rules, alertmanager_url=am
            ) as prom,
        ):

            def regression_alert() -> dict | None:  # type: ignore[type-arg]
                for notification in received:
                    for alert in notification["alerts"]:
                        if (
                            alert["labels"]["alertname"] == "CIPipelineDurationRegression"
                            and alert["status"] == "firing"
                        ):
                            return alert  # type: ignore[no-any-return]
                return None

            alert = wait_for(
                regression_alert,
                120,
                interval=0.5,
                message="CIPipelineDurationRegression at the webhook",
            )
            assert alert["labels"] == {
                "alertname": "CIPipelineDurationRegression",
                "repository": "acme/webapp",
                "workflow": "CI",
                "branch": "main",
                "severity": "warning",
            }
            annotations = alert["annotations"]
            assert annotations["summary"] == "CI pipeline acme/webapp CI (main) got slower"
            assert annotations["runbook_url"].endswith("#cipipelinedurationregression")
            assert annotations["dashboard_url"].endswith("/d/cipe-pipeline-vs-target")
            # The CI job label is job_name; the target's job label stays.
            assert query(
                prom,
                'count(cicd_pipeline_task_run_duration_seconds_count{job="ci-pipeline-exporter", job_name="test-suite"})',
            )
            panels = [
                f"{path.name}: {fill(expr)}"
                for path in sorted((GRAFANA / "dashboards").glob("*.json"))
                for expr in queries(json.loads(path.read_text()))
            ]
            empty = list(panels)

            def every_panel_has_data() -> bool:
                # A few panels need two rule evaluations: look again until all have data.
                empty[:] = [e for e in empty if not query(prom, e.split(": ", 1)[1])]
                return not empty

            try:
                wait_for(every_panel_has_data, 30, interval=2, message="data in every panel")
            except AssertionError:
                raise AssertionError("\n".join(empty)) from None
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(20)
        log.close()
