"""Generated documentation is current, and the README documents what the code has."""

from __future__ import annotations

import argparse
import re

import yaml

from exporter import docgen
from exporter import metrics as m
from exporter.cli import build_parser
from exporter.config import LimitsConfig, validate_config
from exporter.timeutil import _UNIT_SECONDS, parse_duration
from tests.helpers import ROOT


def test_metrics_doc_is_current() -> None:
    """docs/metrics.md equals what `make docs` would generate from exporter/metrics.py."""
    assert (ROOT / "docs" / "metrics.md").read_text() == docgen.render()


def test_contract_metrics_are_defined() -> None:
    """Every pipeline and exporter metric named in docs/design.md §3 is defined in metrics.py."""
    contract = {
        "cicd_pipeline_run_duration_seconds",
        "cicd_pipeline_run_critical_path_seconds",
        "cicd_pipeline_run_last_duration_seconds",
        "cicd_pipeline_run_last_critical_path_job_seconds",
        "cicd_pipeline_run_active",
        "cicd_pipeline_task_run_duration_seconds",
        "cicd_pipeline_task_run_queue_seconds",
        "cicd_pipeline_task_run_last_duration_seconds",
        "cicd_pipeline_task_step_duration_seconds",
        "cicd_pipeline_target_duration_seconds",
        "cicd_pipeline_baseline_duration_seconds",
        "ci_pipeline_exporter_build_info",
        "ci_pipeline_exporter_up",
        "ci_pipeline_exporter_last_success_timestamp_seconds",
        "ci_pipeline_exporter_poll_duration_seconds",
        "ci_pipeline_exporter_poll_errors_total",
        "ci_pipeline_exporter_api_requests_total",
        "ci_pipeline_exporter_github_rate_limit_remaining",
        "ci_pipeline_exporter_github_rate_limit_limit",
        "ci_pipeline_exporter_series_dropped_total",
    }
    assert contract <= {spec.name for spec in m.ALL_METRICS}


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    head = readme[: readme.index("## Configuration")]
    assert "make demo" in head
    assert "make test" in head
    assert "docs/metrics.md" in readme


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every (nested) subcommand's parser by its name."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update(_subcommands(sub))
    return found


def test_readme_documents_every_command_option() -> None:
    """Each option a command has (beyond --help and the shared log options) appears in a README
    line that names the command: `serve --listen` was missing."""
    lines = (ROOT / "README.md").read_text().splitlines()
    shared = {"-h", "--help", "--log-format", "--log-level"}
    missing = []
    for name, sub in _subcommands(build_parser()).items():
        options = {o for a in sub._actions for o in a.option_strings if o.startswith("--")}
        for option in sorted(options - shared):
            if not any(name in line and option in line for line in lines):
                missing.append(f"{name} {option}")
    assert not missing, missing


def test_readme_lists_every_duration_unit() -> None:
    """The Values paragraph gives an example of every unit the duration parser takes (`w` was
    accepted but undocumented), and each example parses."""
    readme = (ROOT / "README.md").read_text()
    values = readme[readme.index("**Values.**") :].split("\n\n")[0]
    for unit in _UNIT_SECONDS:
        examples = re.findall(rf"`(\d+{unit})`", values)
        assert examples, unit
        assert parse_duration(examples[0]) > 0


def test_readme_lists_every_alert() -> None:
    """Every alert of the shipped rules is named in the README."""
    rules = yaml.safe_load((ROOT / "grafana" / "alerts" / "ci-pipeline.rules.yml").read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r}
    readme = (ROOT / "README.md").read_text()
    assert alerts
    assert not {a for a in alerts if a not in readme}


def test_readme_sample_limits_are_the_defaults() -> None:
    """The README's sample config shows `limits` at their defaults, as its comments say: a
    reader sizing a deployment from it gets the exporter's real caps."""
    readme = (ROOT / "README.md").read_text()
    sample = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    shown = validate_config({"limits": yaml.safe_load(sample)["limits"]}).limits
    assert shown == LimitsConfig()
    assert f"`limits.max_series_per_metric` ({LimitsConfig().max_series_per_metric:,};" in readme
