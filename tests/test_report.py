"""The pipeline review report: the demo's page, its JSON and the CLI over the same state agree with
/metrics; the page in headless Chromium; untrusted names; empty state; Prometheus errors."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import struct
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter import metrics as m
from exporter.config import validate_config
from exporter.observations import Increment, Latest, Observe, ReplaceGroup, Unit
from exporter.report import ReportPage
from exporter.store import Store
from tests.helpers import (
    ROOT,
    Exposition,
    free_port,
    require_binary,
    run_cli,
    simulator_cmd,
    wait_for,
)

CORE = ("cicd_", "buildkit_", "github_actions_cache", "container_image")


@dataclass
class DemoPage:
    """What the demo served for one scenario, and the CLI's JSON over its state afterwards."""

    metrics: Exposition
    page: str
    data: dict[str, Any]
    cli: dict[str, Any]
    landing: str


def _core(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.startswith(CORE))


def _stable_metrics(url: str) -> str:
    """/metrics once the pipeline's series stop changing (every history run and its logs, test
    reports and image tags recorded)."""
    seen: list[str] = []

    def settled() -> str | None:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        core = _core(text)
        seen.append(core)
        done = 'tag="sha-{head_sha:7}"' in core and len(seen) > 1 and seen[-2] == core
        return text if done else None

    return str(wait_for(settled, 60, interval=2.0, message="settled demo metrics"))


def _demo(scenario: str, tmp: Path) -> DemoPage:
    port = free_port()
    state = tmp / "state.db"
    config = tmp / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state": {"path": str(state)},
                "github": {"repositories": [{"name": "acme/webapp"}]},
                "targets": [
                    {
                        "repository": "acme/webapp",
                        "workflow": "CI",
                        "branch": "main",
                        "target": {"lower": "10m", "upper": "12m"},
                        "baseline": {"lower": "23m", "upper": "27m"},
                    }
                ],
            }
        )
    )
    log = (tmp / "demo.log").open("wb")
    process = subprocess.Popen(
        simulator_cmd(
            "demo",
            "--listen",
            f"127.0.0.1:{port}",
            "--scenario",
            scenario,
            "--speed",
            "0",
            "--state",
            str(state),
            "--log-format",
            "json",
        ),
        stdout=log,
        stderr=log,
        cwd=ROOT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, 60)
        text = _stable_metrics(url)
        data = httpx.get(f"{url}/report?format=json", timeout=10).json()
        page = httpx.get(f"{url}/report", timeout=10).text
        landing = httpx.get(url, timeout=5).text
        # The same run set: nothing was recorded while the report was read (speed 0).
        assert _core(httpx.get(f"{url}/metrics", timeout=5).text) == _core(text)
        # The command reads the store beside the running exporter (which holds its lock).
        result = run_cli("report", "--config", str(config), "--format", "json")
        assert result.returncode == 0, result.stderr
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        log.close()
    return DemoPage(Exposition.parse(text), page, data, json.loads(result.stdout), landing)


@pytest.fixture(scope="module")
def demo_pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DemoPage]:
    """The seed and optimized demos, each run until its history is recorded, then stopped."""
    return {
        scenario: _demo(scenario, tmp_path_factory.mktemp(scenario))
        for scenario in ("seed", "optimized")
    }


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile, written out here: buckets (le, cumulative), +Inf last."""
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    raise AssertionError("no bucket")


def run_buckets(exp: Exposition) -> list[tuple[float, float]]:
    by_le: dict[float, float] = {}
    for labels, value in exp.select(
        "cicd_pipeline_run_duration_seconds_bucket", branch="main", result="success"
    ).items():
        le = float(dict(labels)["le"])
        by_le[le] = by_le.get(le, 0.0) + value
    return sorted(by_le.items())


def page_values(page: str) -> dict[str, str]:
    """Every <data data-key value> of the page."""
    found = re.findall(r'<data value="([^"]*)" data-key="([^"]*)">', page)
    return {html.unescape(key): value for value, key in found}


def _without_time(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in ("generated_at", "source")}


@pytest.mark.parametrize("scenario", ["seed", "optimized"])
def test_demo_report_numbers_equal_metrics_and_json(
    demo_pages: dict[str, DemoPage], scenario: str
) -> None:
    """For the demo's scenario, the headline, critical path, runner minutes, test suites and image
    duplication on /report equal what /metrics gives (computed here from its samples), and equal
    /report?format=json and `report --config --format json` over the same state."""
    demo = demo_pages[scenario]
    exp, data = demo.metrics, demo.data
    assert _without_time(data) == _without_time(demo.cli)
    pipeline = data["pipelines"][0]
    head = pipeline["headline"]
    buckets = run_buckets(exp)
    assert head["runs"] == buckets[-1][1] > 0
    assert head["p50"] == pytest.approx(quantile(0.5, buckets))
    assert head["p90"] == pytest.approx(quantile(0.9, buckets))
    within = exp.total("cicd_pipeline_run_target_total", outcome="within")
    assert head["within_share"] == pytest.approx(
        within / exp.total("cicd_pipeline_run_target_total")
    )
    latest = exp.by("cicd_pipeline_run_last_critical_path_job_seconds", "job_name", branch="main")
    now = pipeline["critical_path"]["bars"][-1]
    assert {j["name"]: j["latest"] for j in now["jobs"]} == {k[0]: v for k, v in latest.items()}
    for job in now["jobs"]:
        total = exp.total(
            "cicd_pipeline_task_run_duration_seconds_sum", job_name=job["name"], result="success"
        )
        count = exp.total(
            "cicd_pipeline_task_run_duration_seconds_count", job_name=job["name"], result="success"
        )
        assert job["mean"] == pytest.approx(total / count)
    runner = exp.total("cicd_pipeline_task_run_duration_seconds_sum") / 60
    runs = exp.total("cicd_pipeline_run_duration_seconds_count")
    assert pipeline["cost"]["runner_minutes_per_run"] == pytest.approx(runner / runs)
    for suite in pipeline["tests"]["suites"]:
        sums = exp.total("cicd_test_suite_duration_seconds_sum", suite=suite["name"])
        counts = exp.total("cicd_test_suite_duration_seconds_count", suite=suite["name"])
        assert suite["mean"] == pytest.approx(sums / counts)
    image_set = data["images"]["sets"][0]
    unique = exp.total("container_image_set_size_bytes", kind="unique")
    total = exp.total("container_image_set_size_bytes", kind="total")
    assert image_set["duplication"] == pytest.approx(1 - unique / total)

    shown = page_values(demo.page)
    assert float(shown["p0.headline.p50"]) == pytest.approx(head["p50"])
    assert float(shown["p0.headline.p90"]) == pytest.approx(head["p90"])
    assert float(shown["p0.headline.runs"]) == head["runs"]
    assert float(shown["p0.headline.within_share"]) == pytest.approx(head["within_share"])
    assert float(shown["p0.cost.runner_minutes_per_run"]) == pytest.approx(runner / runs)
    for job in now["jobs"]:
        assert float(shown[f"p0.path.now.job.{job['name']}"]) == pytest.approx(job["mean"])
    assert float(shown[f"images.set.{image_set['name']}.duplication"]) == pytest.approx(
        image_set["duplication"]
    )
    assert 'href="report"' in demo.landing


def test_optimized_page_shows_the_target_met_and_seed_not(
    demo_pages: dict[str, DemoPage],
) -> None:
    """The optimized pipeline (10–12 min) meets its 12 min target: the page says so, with its
    progress at 100 %; the seed pipeline (23–27 min) does not, and finds opportunities."""
    optimized, seed = demo_pages["optimized"], demo_pages["seed"]
    head = optimized.data["pipelines"][0]["headline"]
    assert head["target_met"] is True
    assert head["p50"] <= 720
    assert head["progress"] == 1.0
    assert '<span class="status met">met</span>' in optimized.page
    assert seed.data["pipelines"][0]["headline"]["target_met"] is False
    assert '<span class="status missed">not met</span>' in seed.page
    kinds = {o["kind"] for o in seed.data["pipelines"][0]["opportunities"]["items"]}
    assert {"registry_only_job", "test_split", "image_duplication"} <= kinds
    # Every seed run lies between the baseline's bounds, one 4-minute bucket: the median is
    # interpolated inside it, and the page says so with the bucket.
    assert seed.data["pipelines"][0]["headline"]["p50_bucket"] == [1380.0, 1620.0]
    assert "(estimated: it lies between 23.0 min and 27.0 min, one histogram bucket)" in seed.page


# -- the page in a browser --------------------------------------------------------------------------
def chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on a file, as the machine runs it (no sandbox, no network services)."""
    binary = require_binary("chromium")
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tempfile.mkdtemp(dir=tmp)}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.integration
def test_page_in_headless_chromium_has_no_console_errors(
    demo_pages: dict[str, DemoPage], tmp_path: Path
) -> None:
    """The seed page renders in headless Chromium: a 1280 × 2400 screenshot and not one console
    message (the page's CSP would report any fetch); a page loading an image does report one, so
    the check can fail."""
    page = tmp_path / "report.html"
    page.write_text(demo_pages["seed"].page)
    shot = tmp_path / "report.png"
    result = chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400")
    assert result.returncode == 0, result.stderr[-2000:]
    assert png_size(shot) == (1280, 2400)
    assert console_messages(result.stderr) == []
    bad = tmp_path / "bad.html"
    bad.write_text(
        demo_pages["seed"].page.replace(
            "</main>", '<img src="http://127.0.0.1:9/x.png" alt="fetched"></main>'
        )
    )
    control = chromium(bad, tmp_path, f"--screenshot={tmp_path / 'bad.png'}")
    assert any("img-src" in line for line in console_messages(control.stderr))


class Outline(HTMLParser):
    """What the accessibility check needs from a DOM: svgs with their labels, figures' tables,
    ids and their text, the document's language."""

    def __init__(self) -> None:
        super().__init__()
        self.lang: str | None = None
        self.svgs: list[dict[str, str]] = []
        self.figures: list[dict[str, int]] = []
        self.text_of: dict[str, str] = {}
        self.scripts = 0
        self.tables_without_caption = 0
        self._open: list[tuple[str, str | None]] = []
        self._table_caption: list[bool] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.lang = a.get("lang")
        if tag == "script":
            self.scripts += 1
        if tag == "figure":
            self.figures.append({"svg": 0, "table": 0})
        if tag in ("svg", "table") and self.figures and self._inside("figure"):
            self.figures[-1][tag] += 1
        if tag == "svg":
            self.svgs.append(a)
        if tag == "table":
            self._table_caption.append(False)
        if tag == "caption" and self._table_caption:
            self._table_caption[-1] = True
        self._open.append((tag, a.get("id")))

    def _inside(self, tag: str) -> bool:
        return any(t == tag for t, _ in self._open)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._table_caption:
            self.tables_without_caption += not self._table_caption.pop()
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open:
            if element_id:
                self.text_of[element_id] = self.text_of.get(element_id, "") + data


@pytest.mark.integration
def test_page_passes_the_accessibility_check(
    demo_pages: dict[str, DemoPage], tmp_path: Path
) -> None:
    """In the DOM Chromium builds from the page: a language, no script, every chart an svg with
    role="img" labelled by a non-empty <title> and <desc>, every chart's figure with a table of
    its numbers, every table with a caption."""
    page = tmp_path / "report.html"
    page.write_text(demo_pages["seed"].page)
    result = chromium(page, tmp_path, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    outline = Outline()
    outline.feed(result.stdout)
    assert outline.lang == "en"
    assert outline.scripts == 0
    assert len(outline.svgs) >= 10
    for svg in outline.svgs:
        assert svg.get("role") == "img"
        title, desc = svg["aria-labelledby"].split()
        assert outline.text_of.get(title, "").strip()
        assert len(outline.text_of.get(desc, "").strip()) > 20
    assert outline.figures
    assert all(f["svg"] == 1 and f["table"] == 1 for f in outline.figures), outline.figures
    assert outline.tables_without_caption == 0


# -- untrusted names ------------------------------------------------------------------------------
HOSTILE = "<script>alert(1)</script>"


def _hostile_state(path: Path) -> None:
    """A state store whose workflow, job, step, suite and instruction are hostile names."""
    store = Store(path)
    repo, workflow, job = "acme/webapp", f"CI {HOSTILE}", HOSTILE
    items = (
        Observe(m.RUN_DURATION, (repo, workflow, "main", "push", "success"), 700.0),
        Observe(m.RUN_CRITICAL_PATH, (repo, workflow, "main"), 650.0),
        ReplaceGroup(
            m.RUN_LAST_CRITICAL_PATH_JOB, (repo, workflow, "main"), (((job,), 650.0),), 1.0
        ),
        Observe(m.JOB_DURATION, (repo, workflow, job, "success"), 650.0),
        Observe(m.STEP_DURATION, (repo, workflow, job, f"Run {HOSTILE}", "success"), 600.0),
        Observe(m.BUILDKIT_BUILD, (repo, workflow, job, "gha"), 300.0),
        Observe(m.BUILDKIT_STEP_DURATION, (repo, workflow, job, HOSTILE, f"RUN {HOSTILE}"), 90.0),
        Observe(m.TEST_SUITE_DURATION, (repo, workflow, HOSTILE), 120.0),
        Increment(m.TEST_CASES, (repo, workflow, HOSTILE, "failed"), 2),
        Latest(m.RUN_LAST_DURATION, (repo, workflow, "main"), 700.0, 1.0),
    )
    assert store.commit(Unit("github:acme/webapp", items=items, keys=(("attempt", "x"),)))
    store.close()


def test_hostile_names_render_as_text(tmp_path: Path) -> None:
    """A job, step, workflow, suite and Dockerfile instruction named <script>alert(1)</script> are
    text in the HTML (escaped, no script element) and escaped in markdown; JSON keeps them as
    they are."""
    _hostile_state(tmp_path / "state.db")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"state": {"path": str(tmp_path / "state.db")}}))
    page = run_cli("report", "--config", str(config))
    assert page.returncode == 0, page.stderr
    assert "<script" not in page.stdout.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.stdout
    outline = Outline()
    outline.feed(page.stdout)
    assert outline.scripts == 0
    markdown = run_cli("report", "--config", str(config), "--format", "markdown")
    assert "<script>" not in markdown.stdout
    assert r"\<script\>alert\(1\)\</script\>" in markdown.stdout
    data = json.loads(run_cli("report", "--config", str(config), "--format", "json").stdout)
    assert data["pipelines"][0]["workflow"] == f"CI {HOSTILE}"
    assert data["pipelines"][0]["tests"]["suites"][0]["failed"] == 2


# -- empty state and errors -------------------------------------------------------------------------
def test_empty_state_says_there_is_no_data_yet(tmp_path: Path) -> None:
    """Without a state file yet, the report is a page that says there is no data and how to get
    some (serve or once, or the demo); exit 0, and no state file is created by reading."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"state": {"path": str(tmp_path / "state.db")}}))
    result = run_cli("report", "--config", str(config), "--output", str(tmp_path / "r.html"))
    assert result.returncode == 0, result.stderr
    assert f"no state file at {tmp_path / 'state.db'} yet" in result.stderr
    page = (tmp_path / "r.html").read_text()
    assert "No data yet" in page
    assert "No completed run in the state store yet." in page
    assert "make demo" in page
    assert not (tmp_path / "state.db").exists()
    data = json.loads(run_cli("report", "--config", str(config), "--format", "json").stdout)
    assert data["pipelines"] == []
    assert data["empty_help"]


def test_unreachable_prometheus_is_one_line_and_exit_1() -> None:
    """Nothing listening at --prometheus: one line naming the URL and why, exit 1."""
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("report", "--prometheus", url)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"ci-pipeline-exporter: report: cannot query Prometheus at {url}: "
        "connection refused or host unreachable"
    )
    assert result.stdout == ""


def test_prometheus_answering_errors_is_one_line_and_exit_1() -> None:
    """A Prometheus answering 503 with its error body: one line with the status and the error,
    exit 1; a URL with credentials is a usage error that never repeats the URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_GET(self) -> None:
            body = b'{"status":"error","errorType":"unavailable","error":"TSDB not ready"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = run_cli("report", "--prometheus", url, "--format", "json")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"ci-pipeline-exporter: report: Prometheus at {url} answered 503: TSDB not ready"
    )
    secret = run_cli("report", "--prometheus", "http://user:hunter2@127.0.0.1:9090")
    assert secret.returncode == 2
    assert "hunter2" not in secret.stderr
    assert secret.stderr.count("\n") == 1


def test_the_served_page_is_computed_at_most_every_few_seconds() -> None:
    """`/report` reuses what it computed for REUSE_SECONDS (a burst of requests reads the store
    once), then computes again and sees what was recorded meanwhile."""
    store = Store(":memory:")
    config = validate_config({})
    page = ReportPage(store, config)
    first = page.report()
    assert page.report() is first
    page.REUSE_SECONDS = 0.0
    assert page.report() is not first
