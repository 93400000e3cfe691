"""End to end: flaky test cases across re-runs, from the simulator's JUnit artifacts through the
exporter's CLI and `serve` (SIGKILL included) to /metrics and `analyze flaky`. The expected values
are computed here from the simulator's record of every case in every attempt, by the rule itself:
a failure on a head SHA where the case also passed."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from simulator.github import Faults, GitHubSimulator
from simulator.model import SimAttempt
from tests.helpers import (
    ROOT,
    TOKEN,
    Exposition,
    free_port,
    run_cli,
    scrape,
    serve,
    simulator_cmd,
    wait_for,
    write_config,
)
from tests.schemas import validated_simulator

REPO = "acme/webapp"
JUNIT = {"junit": {"artifacts": ["junit*"]}}
Attempt = tuple[int, int]


@dataclass
class CaseTruth:
    failures: list[Attempt] = field(default_factory=list)
    passes: list[Attempt] = field(default_factory=list)


@dataclass
class Truth:
    # (suite, classname, name) → occurrences, runs, re-run seconds
    cases: dict[tuple[str, str, str], tuple[int, int, float]]
    reruns: int
    reports: int
    failures: int


def _wall(attempt: SimAttempt) -> float:
    ran = [j for j in attempt.jobs if j.conclusion != "skipped"]
    return max(j.completed_at for j in ran) - min(j.started_at for j in ran)


def flaky_truth(sim: GitHubSimulator) -> Truth:
    """From every completed attempt's artifact: per case and head SHA, the attempts where it failed
    and passed; failures count where the SHA also has a pass, each charged the wall time of its
    run's next attempt when the case ran there."""
    now = sim.clock.now()
    by_sha: dict[tuple[str, tuple[str, str, str]], CaseTruth] = defaultdict(CaseTruth)
    walls: dict[Attempt, float] = {}
    failed: set[Attempt] = set()
    for run in sim.timelines[REPO].runs_until(now):
        for attempt in run.attempts:
            artifact = sim.artifact(run, attempt) if attempt.end <= now else None
            if artifact is None:
                continue
            key = (run.id, attempt.number)
            walls[key] = _wall(attempt)
            for case, result in artifact.cases.items():
                if result in ("failed", "error"):
                    by_sha[(run.head_sha, case)].failures.append(key)
                    failed.add(key)
                elif result == "passed":
                    by_sha[(run.head_sha, case)].passes.append(key)
    totals: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for (_, case), found in by_sha.items():
        if not found.passes or not found.failures:
            continue
        ran = set(found.failures) | set(found.passes)
        total = totals[case]
        total[0] += len(found.failures)
        total[1] += len({run_id for run_id, _ in found.failures})
        total[2] += sum(walls[(r, n + 1)] for r, n in found.failures if (r, n + 1) in ran)
    reruns = sum(1 for r, n in walls if (r, n - 1) in failed)
    failures = sum(len(t.failures) for t in by_sha.values())
    return Truth(
        {case: (int(t[0]), int(t[1]), t[2]) for case, t in totals.items()},
        reruns,
        len(walls),
        failures,
    )


def assert_flaky_metrics(exp: Exposition, truth: Truth) -> None:
    """Occurrences by suite, re-runs and the flaky cases per suite equal the truth."""
    by_suite: dict[str, float] = defaultdict(float)
    cases: dict[str, float] = defaultdict(float)
    for (suite, _, _), (count, _, _) in truth.cases.items():
        by_suite[suite] += count
        cases[suite] += 1
    flaky = exp.by("cicd_test_case_flaky_total", "suite", repository=REPO, workflow="CI")
    assert {k[0]: v for k, v in flaky.items() if v} == dict(by_suite)
    assert exp.total("cicd_test_case_reruns_total", repository=REPO) == truth.reruns
    gauge = exp.by("cicd_test_suite_flaky_cases", "suite", repository=REPO, workflow="CI")
    assert {k[0]: v for k, v in gauge.items() if v} == dict(cases)


@pytest.fixture
def flaky_sim() -> Iterator[GitHubSimulator]:
    """The `flaky` scenario: failed runs fail one or two flaky cases; most are re-run and pass."""
    with validated_simulator("flaky", seed=1, token=TOKEN) as simulator:
        yield simulator


def _env() -> dict[str, str]:
    return {"TEST_GITHUB_TOKEN": TOKEN}


def test_flaky_cases_equal_ground_truth_and_analyze_lists_them(
    flaky_sim: GitHubSimulator, tmp_path: Path
) -> None:
    """After a poll, flaky occurrences by suite, re-runs after a failure and flaky cases per
    suite equal the truth; failures fixed by the next commit (a new SHA) are not counted;
    `analyze flaky --json` lists each case with its occurrences, runs and re-run minutes, costliest
    first, and the table names them."""
    config = write_config(
        tmp_path / "c.yaml", flaky_sim.url, state=tmp_path / "s.db", repo_extra=JUNIT
    )
    result = run_cli("once", "--config", str(config), env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    truth = flaky_truth(flaky_sim)
    assert truth.reruns >= 3
    occurrences = sum(count for count, _, _ in truth.cases.values())
    assert truth.failures > occurrences  # some failures were fixed on a new SHA, not re-run
    assert_flaky_metrics(Exposition.parse(result.stdout), truth)
    listed = run_cli("analyze", "flaky", "--config", str(config), "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["cases"]
    got = {
        (r["suite"], r["classname"], r["name"]): (r["flaky"], r["runs"], r["rerun_minutes"])
        for r in rows
    }
    want = {case: (n, runs, round(s / 60, 1)) for case, (n, runs, s) in truth.cases.items()}
    assert got == want
    minutes = [r["rerun_minutes"] for r in rows]
    assert minutes == sorted(minutes, reverse=True)
    assert all(21 <= m / max(1, r["runs"]) <= 28 for m, r in zip(minutes, rows, strict=True))
    table = run_cli("analyze", "flaky", "--config", str(config))
    assert table.returncode == 0
    assert all(name in table.stdout for _, _, name in truth.cases)
    # The review report lists the same cases, costliest first (its top ten).
    report = run_cli("report", "--config", str(config), "--format", "json")
    assert report.returncode == 0, report.stderr
    flaky = json.loads(report.stdout)["pipelines"][0]["tests"]["flaky"]
    assert [(f["suite"], f["case"], f["occurrences"], f["runs"]) for f in flaky] == [
        (r["suite"], f"{r['classname']}.{r['name']}", r["flaky"], r["runs"]) for r in rows[:10]
    ]


@pytest.mark.parametrize("glob", ["junit-report-{attempt}", "junit*"])
def test_artifacts_named_for_their_attempt(
    flaky_sim: GitHubSimulator, tmp_path: Path, glob: str
) -> None:
    """Artifacts named junit-report-<attempt> (as with ${{ github.run_attempt }}) whose created_at
    lies outside every attempt's window: with {attempt} in the glob the name decides, every report
    is read for its own attempt and the flaky counts equal the truth; by the time window, none is
    read."""

    def named(payload: dict) -> dict:  # type: ignore[type-arg]
        for item in payload["artifacts"]:
            job_id = item["id"] // 10  # the simulator's ids: job id × 10 + 1
            item["name"] = f"junit-report-{job_id % 100 // 20}"
            item["created_at"] = "2020-01-01T00:00:00Z"
        return payload

    flaky_sim.payload_hooks["run_artifacts"] = named
    extra = {"junit": {"artifacts": [glob]}}
    config = write_config(
        tmp_path / "c.yaml", flaky_sim.url, state=tmp_path / "s.db", repo_extra=extra
    )
    result = run_cli("once", "--config", str(config), env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    exp = Exposition.parse(result.stdout)
    truth = flaky_truth(flaky_sim)
    reports = exp.total("cicd_test_suite_duration_seconds_count", suite="pages")
    if glob == "junit*":
        assert reports == 0
        return
    assert reports == truth.reports
    assert_flaky_metrics(exp, truth)


@pytest.mark.parametrize("state", ["missing", "garbage"])
def test_analyze_flaky_without_a_readable_state_file_is_a_one_line_error(
    tmp_path: Path, state: str
) -> None:
    """No state file yet, or one that is not SQLite: one line naming state.path, exit 2, no
    traceback."""
    path = tmp_path / "state.db"
    if state == "garbage":
        path.write_bytes(b"not a database at all" * 100)
    config = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9", state=path)
    result = run_cli("analyze", "flaky", "--config", str(config))
    assert result.returncode == 2
    assert "state.path" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _converged(url: str, sim: GitHubSimulator) -> bool:
    exp = scrape(url)
    truth = flaky_truth(sim)
    return exp.total("cicd_test_suite_duration_seconds_count", suite="pages") == truth.reports


def test_flaky_counts_survive_sigkill(flaky_sim: GitHubSimulator, tmp_path: Path) -> None:
    """`serve` killed with SIGKILL between polls and while reading artifacts, restarted: the
    flaky counts equal the truth, including a failure recorded before the kill whose re-run
    passed after it."""
    config = write_config(
        tmp_path / "c.yaml", flaky_sim.url, state=tmp_path / "s.db", repo_extra=JUNIT
    )
    port, log = free_port(), tmp_path / "exporter.log"
    url = f"http://127.0.0.1:{port}"
    timeline = flaky_sim.timelines[REPO]
    with serve(config, port, _env(), log) as process:
        wait_for(lambda: _converged(url, flaky_sim), 60, message="first catch-up")
        process.send_signal(signal.SIGKILL)
        process.wait()
    lonely = [
        r
        for r in timeline.runs_until(flaky_sim.clock.now())
        if len(r.attempts) == 1 and r.attempts[0].conclusion == "failure"
    ]
    assert lonely, "the scenario has a failed run that was not re-run"
    flaky_sim.rerun(REPO, lonely[-1].id)
    flaky_sim.clock.advance(3 * 3600)
    flaky_sim.set_faults(Faults(latency_rate=1.0, latency_seconds=0.4, path_pattern=r"/zip$"))
    with serve(config, port, _env(), log) as process:
        before = len(flaky_sim.requests)
        wait_for(
            lambda: any(r["path"].endswith("/zip") for r in flaky_sim.requests[before:]),
            60,
            message="an artifact being read",
        )
        process.send_signal(signal.SIGKILL)
        process.wait()
    flaky_sim.set_faults(Faults())
    with serve(config, port, _env(), log):
        wait_for(lambda: _converged(url, flaky_sim), 60, message="catch-up after SIGKILL")
        truth = flaky_truth(flaky_sim)
        assert_flaky_metrics(scrape(url), truth)


def _big_zip(count: int) -> bytes:
    rows = "".join(
        f'<testcase classname="big.tests.T{i % 100}" name="test_{i:06d}" time="0.01"/>'
        for i in range(count)
    )
    xml = f'<testsuites><testsuite name="pytest">{rows}</testsuite></testsuites>'.encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("junit.xml", xml)
    return buffer.getvalue()


def test_hundred_thousand_case_names_keep_the_state_bounded(
    sim: GitHubSimulator, tmp_path: Path
) -> None:
    """A report of 100,000 distinct case names with junit.max_cases 20,000: the history holds
    20,000 cases, the other 80,000 results are counted as overflow, older cases are evicted
    (counted), no case name becomes a label, and the state file stays small."""
    timeline = sim.timelines[REPO]
    now = sim.clock.now()
    run = next(r for r in reversed(timeline.runs_until(now)) if r.attempts[-1].end < now - 60)
    artifact = sim.artifact(run, run.attempts[-1])
    assert artifact is not None
    sim.artifact_overrides[artifact.id] = _big_zip(100_000)
    extra = {"junit": {"artifacts": ["junit*"], "max_cases": 20_000}}
    config = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", repo_extra=extra)
    result = run_cli("once", "--config", str(config), env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    exp = Exposition.parse(result.stdout)
    assert exp.total("ci_pipeline_exporter_test_cases", repository=REPO) == 20_000
    dropped = exp.by("ci_pipeline_exporter_test_cases_dropped_total", "reason")
    assert dropped[("overflow",)] == 80_000
    assert dropped.get(("evicted",), 0) >= 1
    assert "test_0" not in result.stdout
    assert (tmp_path / "s.db").stat().st_size < 16 << 20


def test_demo_flaky_scenario_shows_flaky_tests(tmp_path: Path) -> None:
    """`python -m simulator demo --scenario flaky` serves flaky occurrences and re-runs after a
    failure, and `analyze flaky` lists the cases from its state file while it runs."""
    port, state = free_port(), tmp_path / "demo.db"
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        simulator_cmd(
            "demo",
            "--scenario",
            "flaky",
            "--listen",
            f"127.0.0.1:{port}",
            "--state",
            str(state),
            "--log-format",
            "json",
        ),
        stdout=log,
        stderr=log,
        cwd=ROOT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: scrape(url).total("cicd_test_case_flaky_total") > 0,
            30,
            message="flaky occurrences in the demo",
            process=demo,
            log=tmp_path / "demo.log",
        )
        assert scrape(url).total("cicd_test_case_reruns_total") > 0
        config = write_config(tmp_path / "c.yaml", url, state=state)
        listed = run_cli("analyze", "flaky", "--config", str(config), "--json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["cases"]
        page = httpx.get(f"{url}/report", timeout=30).text
        assert "Flaky test cases" in page
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(20)
        log.close()
