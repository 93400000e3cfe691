"""`report --prometheus`: against a real Prometheus loaded with `backfill` history of the
simulator's `journey` (six weeks from the baseline to the target), and against an empty one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import require_binary, run_cli
from tests.schemas import validated_simulator
from tests.servers import prometheus


def _backfilled(tmp_path: Path, env: dict[str, str]) -> tuple[Path, dict[str, Any]]:
    """TSDB blocks of the journey's history, and the simulator's truth."""
    promtool = require_binary("promtool")
    with validated_simulator("journey", seed=5, token=env["TEST_GITHUB_TOKEN"]) as sim:
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "state": {"path": str(tmp_path / "state.db")},
                    "github": {
                        "api_url": sim.url,
                        "token_env": "TEST_GITHUB_TOKEN",
                        "repositories": [
                            {"name": "acme/webapp", "junit": {"artifacts": ["junit*"]}}
                        ],
                    },
                }
            )
        )
        output = tmp_path / "history.om"
        result = run_cli(
            "backfill", "--config", str(config), "--since", "60d", "--output", str(output), env=env
        )
        assert result.returncode == 0, result.stderr[-2000:]
        truth = sim.truth()
    data = tmp_path / "tsdb"
    blocks = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(output), str(data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert blocks.returncode == 0, blocks.stderr[-2000:]
    return data, truth


def _successes(truth: dict[str, Any], start: float, end: float) -> int:
    """Successful attempts that completed in (start, end], from the simulator's timestamps."""
    count = 0
    for attempt in truth["attempts"]:
        ran = [j for j in attempt["jobs"] if j["conclusion"] != "skipped"]
        completed = max(j["completed_at"] for j in ran)
        count += attempt["conclusion"] == "success" and start < completed <= end
    return count


@pytest.mark.integration
def test_report_from_prometheus_with_backfilled_history(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Over 42 days of backfilled journey history: six weeks of trend, each week's run count equal
    to the simulator's successful attempts in it, the first week's median at the baseline (23–27
    min) and the last week's at the target (10–12 min), within 10 %; the baseline period against
    now in the critical path, runner minutes saved, per-suite test times; the HTML draws the
    trend."""
    data, truth = _backfilled(tmp_path, env)
    with prometheus(tmp_path, data=data, extra_args=("--storage.tsdb.retention.time=10y",)) as url:
        result = run_cli("report", "--prometheus", url, "--since", "42d", "--format", "json")
        page = run_cli("report", "--prometheus", url, "--since", "42d")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "prometheus"
    pipeline = report["pipelines"][0]
    weeks = pipeline["trend"]["weeks"]
    assert len(weeks) == 6
    assert [w["runs"] for w in weeks] == [_successes(truth, w["start"], w["end"]) for w in weeks]
    assert 0.9 * 23 * 60 <= weeks[0]["p50"] <= 1.1 * 27 * 60
    assert 0.9 * 10 * 60 <= weeks[-1]["p50"] <= 1.1 * 12 * 60
    head = pipeline["headline"]
    assert head["runs"] == weeks[-1]["runs"]
    assert head["p50"] == weeks[-1]["p50"]
    assert head["hint"]  # backfill writes no target gauges: the page says where they come from
    bars = pipeline["critical_path"]["bars"]
    assert [b["label"] for b in bars] == ["baseline period", "now"]
    assert bars[0]["critical_path_mean"] > bars[1]["critical_path_mean"]
    cost = pipeline["cost"]
    assert cost["runs_per_month"] > 0
    assert cost["runner_minutes_saved_per_month"] > 0
    assert pipeline["graph"]["hint"].startswith("The needs: graph is kept")
    assert {s["name"] for s in pipeline["tests"]["suites"]} >= {"accounts", "pages", "blog"}
    assert page.returncode == 0
    assert "Weekly median and 90th percentile" in page.stdout


@pytest.mark.integration
def test_report_from_an_empty_prometheus_says_how_to_get_data(tmp_path: Path) -> None:
    """A Prometheus without the exporter's series: exit 0 and a page that says there is no data
    yet, and how to scrape the exporter or load history with backfill."""
    with prometheus(tmp_path) as url:
        result = run_cli("report", "--prometheus", url, "--format", "markdown")
    assert result.returncode == 0, result.stderr
    assert "## No data yet" in result.stdout
    assert "Prometheus has no cicd_pipeline_run_duration_seconds" in result.stdout
    assert "backfill" in result.stdout
