"""Dashboards and rules as generated artifacts: fresh, datasource-variable only, stable UIDs, and
naming only metrics the exporter emits."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import yaml

from exporter import metrics as m
from grafana.dashboards import queries
from grafana.generate import ROOT as GRAFANA
from grafana.knobs import DASHBOARD_UIDS
from tests.helpers import ROOT

FUNCTIONS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "increase",
    "histogram_quantile",
    "topk",
    "bottomk",
    "by",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "time",
    "clamp",
    "label_values",
    "without",
    "bool",
    "abs",
    "delta",
    "irate",
    "le",
    "inf",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers before `{`, `[` or standing alone,
    excluding functions, keywords, label names and strings)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_matchers = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_grouping = re.sub(
        r"\b(by|on|ignoring|without|group_left|group_right)\s*\([^)]*\)", r"\1", without_matchers
    )
    without_ranges = re.sub(r"\[[^\]]*\]", "[]", without_grouping)
    # label_values(metric, label): the second argument names a label.
    without_ranges = re.sub(r",\s*[A-Za-z_]\w*\s*\)\s*$", ")", without_ranges)
    tokens = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", without_ranges))
    return {
        t
        for t in tokens
        if t not in FUNCTIONS and ("_" in t or ":" in t) and not t.startswith("__")
    }


def test_generated_files_are_current() -> None:
    """Regenerating dashboards, rules and provisioning would change nothing."""
    result = subprocess.run(
        [sys.executable, "-m", "grafana.generate", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_dashboards_use_the_datasource_variable_and_stable_uids() -> None:
    uids = set()
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        document = json.loads(path.read_text())
        uids.add(document["uid"])
        names = {v["name"] for v in document["templating"]["list"]}
        assert "datasource" in names
        text = path.read_text()
        uid_values = set(re.findall(r'"uid": "([^"]*)"', text)) - {document["uid"]}
        assert uid_values == {"${datasource}"}, (path.name, uid_values)
        for panel in document["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${datasource}"
        if path.name not in ("images.json", "exporter.json"):
            assert {"repository", "workflow"} <= names
    assert uids == set(DASHBOARD_UIDS.values())


def test_no_dashboard_or_rule_names_a_metric_the_exporter_does_not_emit() -> None:
    emitted = m.all_series_names()
    rules = yaml.safe_load((GRAFANA / "alerts" / "ci-pipeline.rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    used: set[str] = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            used |= metric_names(rule["expr"])
    for path in (GRAFANA / "dashboards").glob("*.json"):
        document = json.loads(path.read_text())
        for expr in queries(document):
            used |= metric_names(expr)
        for variable in document["templating"]["list"]:
            if variable.get("type") == "query":
                used |= metric_names(variable["query"])
    unknown = used - emitted - recorded
    assert not unknown, unknown
    assert "cicd_pipeline_run_duration_seconds_bucket" in used
    assert metric_names('sum by (job) (rate(foo_total{a="b_c"}[5m]))') == {"foo_total"}
