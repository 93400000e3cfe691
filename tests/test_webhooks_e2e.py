"""Webhooks end to end: the simulator sends signed workflow_job/workflow_run deliveries as its
runs progress (some repeated, some dropped, some while the exporter is down) to `serve`; the
metrics end up equal to the simulator's ground truth, the live gauges follow the jobs and survive
a restart, the API cost per attempt stays at most 2 requests, and two shards forward each other's
events (a shard that owns nothing included)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from exporter.config import ShardingConfig
from exporter.webhooks.receiver import FORWARDED
from simulator.github import GitHubSimulator
from simulator.webhooks import WebhookSender
from tests.helpers import (
    REFERENCE,
    TOKEN,
    Exposition,
    assert_matches_truth,
    free_port,
    scrape,
    serve,
    wait_for,
)
from tests.hooks import HOOK_ENV, SECRET, deliver, hooks_config, live_jobs, quiet_moment
from tests.schemas import validated_simulator

COUNTER = "ci_pipeline_exporter_webhook_events_total"
ENV = {"TEST_GITHUB_TOKEN": TOKEN, **HOOK_ENV}
EXAMPLE_QUEUED = REFERENCE / "github-api" / "examples" / "webhook-workflow_job.queued.json"


@contextmanager
def running(config: Path, tmp_path: Path, port: int | None = None) -> Iterator[str]:
    """`serve` with webhooks, ready (every first poll done); yields its metrics URL."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with serve(config, port, ENV, tmp_path / f"exporter-{port}.log"):
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 30, message="ready")
        yield url


def step(sim: GitHubSimulator, senders: list[WebhookSender], until: float) -> None:
    """Simulated time moves to `until` in five-minute steps, each step's events delivered."""
    while sim.clock.now() < until:
        sim.clock.advance(min(300.0, until - sim.clock.now()))
        for sender in senders:
            sender.pump()


def handled(url: str, senders: list[WebhookSender], before: int = 0) -> bool:
    """Every delivery that reached the exporter (since `before` deliveries, when it started) has
    been handled: its outcome counted."""
    delivered = sum(s.stats.sent - s.stats.failed for s in senders)
    return scrape(url).total(COUNTER) == delivered - before


def open_jobs(exposition: Exposition) -> dict[tuple[str, ...], float]:
    """The live gauge's non-zero series by (repository, runner labels, state)."""
    found = exposition.by("cicd_pipeline_task_run_active", "repository", "runner_labels", "state")
    return {k: v for k, v in found.items() if v}


def test_webhooks_alone_record_everything_once_at_two_requests_per_attempt(
    tmp_path: Path,
) -> None:
    """With the reconciler idle (1 h), eight simulated hours arrive by webhook only — through two
    hooks delivering each event under one delivery id, one of them repeating some: every count
    equals ground truth (JUnit enrichments included), and the core facts cost at most 2 API
    requests per completed attempt."""
    with validated_simulator("seed", seed=6, token=TOKEN) as sim:
        junit = {"junit": {"artifacts": ["junit*"]}}
        config, hook = hooks_config(tmp_path, sim, reconcile="1h", repo_extra=junit)
        with running(config, tmp_path) as url:
            start = sim.clock.now()
            sim.requests.clear()
            senders = [
                WebhookSender(sim, hook, SECRET, repeat_rate=0.2, seed=1),
                WebhookSender(sim, hook, SECRET, seed=2),  # the organisation's hook
            ]
            step(sim, senders, quiet_moment(sim, start + 8 * 3600))
            wait_for(lambda: handled(url, senders), 30, message="every delivery handled")
            truth = sim.truth()
            exposition = scrape(url)
            assert_matches_truth(exposition, truth)
            attempts = sum(1 for a in truth["attempts"] if a["jobs"] and _ended_after(a, start))
            assert attempts >= 14
            paths = [r["path"] for r in sim.requests]
            core = [p for p in paths if p.endswith("/jobs") or "/contents/" in p]
            assert len(core) <= 2 * attempts
            assert all("/artifacts" in p for p in paths if p not in core), paths
            suites = wait_for(
                lambda: _suite_counts(url) == _suite_truth(truth) and _suite_counts(url),
                30,
                message="JUnit enrichments of webhook-observed attempts",
            )
            assert sum(suites.values()) > sum(_suite_truth(sim.truth(start)).values())
            outcomes = exposition.by(COUNTER, "outcome")
            assert outcomes[("duplicate",)] > 0
            assert open_jobs(exposition) == {}
            for sender in senders:
                sender.stop()


def _suite_counts(url: str) -> dict[tuple[str, ...], float]:
    return scrape(url).by("cicd_test_suite_duration_seconds_count", "suite")


def _suite_truth(truth: dict[str, Any]) -> dict[tuple[str, ...], float]:
    """How many times each suite (app) ran, from the simulator's JUnit artifacts."""
    counts: dict[tuple[str, ...], float] = {}
    for attempt in truth["attempts"]:
        for suite in attempt["junit"]:
            counts[(suite,)] = counts.get((suite,), 0.0) + 1
    return counts


def _ended_after(attempt: dict[str, object], start: float) -> bool:
    jobs = attempt["jobs"]
    assert isinstance(jobs, list)
    return max(float(j["completed_at"]) for j in jobs) > start


def test_live_gauges_follow_jobs_and_survive_a_restart(tmp_path: Path) -> None:
    """A job's queued event shows it queued (with the oldest-queued timestamp), a restart keeps
    it, its in_progress event moves it to executing, and its completion empties the gauge."""
    with validated_simulator("seed", seed=6, token=TOKEN) as sim:
        config, hook = hooks_config(tmp_path, sim, reconcile="1h")
        sender = WebhookSender(sim, hook, SECRET)
        timeline = sim.timelines["acme/webapp"]
        run = next(
            r for r in timeline.runs_until(sim.clock.now() + 7200) if r.created_at > sim.clock.now()
        )
        job = run.attempts[0].jobs[0]
        with running(config, tmp_path) as url:
            step(sim, [sender], job.created_at + 1)
            queued = {("acme/webapp", "ubuntu-latest", "queued"): 1.0}
            assert dict(live_jobs(sim, job.created_at + 1)) == {
                k: int(v) for k, v in queued.items()
            }
            wait_for(lambda: open_jobs(scrape(url)) == queued, 10, message="queued")
            oldest = scrape(url).by(
                "cicd_pipeline_task_run_oldest_queued_timestamp_seconds", "runner_labels"
            )
            assert oldest == {("ubuntu-latest",): job.created_at}
        with running(config, tmp_path) as url:
            assert open_jobs(scrape(url)) == queued
            before = sender.stats.sent
            step(sim, [sender], job.started_at + 1)
            executing = {("acme/webapp", "ubuntu-latest", "executing"): 1.0}
            wait_for(lambda: open_jobs(scrape(url)) == executing, 10, message="executing")
            step(sim, [sender], quiet_moment(sim, job.completed_at))
            wait_for(lambda: handled(url, [sender], before), 10, message="deliveries handled")
            exposition = scrape(url)
            assert open_jobs(exposition) == {}
            assert exposition.total("cicd_pipeline_task_run_oldest_queued_timestamp_seconds") == 0
        sender.stop()


def test_reconciler_finds_what_webhooks_missed(tmp_path: Path) -> None:
    """40% of deliveries dropped, and three hours of them sent while the exporter was down: the
    reconciler (every 2 s) records the rest, the counts equal ground truth, and no job stays open
    once every run has completed."""
    with validated_simulator("seed", seed=6, token=TOKEN) as sim:
        config, hook = hooks_config(tmp_path, sim, reconcile="2s")
        sender = WebhookSender(sim, hook, SECRET, drop_rate=0.4, seed=3)
        start = sim.clock.now()
        with running(config, tmp_path):
            step(sim, [sender], start + 4 * 3600)
        step(sim, [sender], start + 7 * 3600)  # nobody listening
        assert sender.stats.failed > 0
        with running(config, tmp_path) as url:
            step(sim, [sender], quiet_moment(sim, start + 10 * 3600))
            truth = sim.truth()
            wait_for(
                lambda: (
                    scrape(url).total("ci_pipeline_exporter_runs_observed_total")
                    == len(truth["attempts"])
                ),
                30,
                message="reconciled",
            )
            wait_for(lambda: open_jobs(scrape(url)) == {}, 10, message="no job open")
            assert_matches_truth(scrape(url), truth)
        sender.stop()


def test_two_shards_forward_each_others_events(tmp_path: Path) -> None:
    """An organisation hook sends every event to shard 0; events of shard 1's repositories are
    forwarded to it. Each shard exports only its own repositories, and together they equal
    ground truth."""
    repositories = tuple(f"acme/repo-{i}" for i in range(4))
    with validated_simulator("seed", seed=6, token=TOKEN, repositories=repositories) as sim:
        port = free_port()
        configs = _shard_configs(tmp_path, sim, port)
        sender = WebhookSender(sim, f"http://127.0.0.10:{port}/webhook", SECRET)
        with running(configs[0], tmp_path) as url0, running(configs[1], tmp_path) as url1:
            urls = [url0, url1]
            step(sim, [sender], quiet_moment(sim, sim.clock.now() + 6 * 3600))
            truth = sim.truth()
            for url in urls:
                wait_for(lambda u=url: _owns_all(scrape(u), truth), 30, message="caught up")
            merged = Exposition()
            owners = []
            for url in urls:
                exposition = scrape(url)
                owners.append(
                    {
                        k[0]
                        for k in exposition.by(
                            "ci_pipeline_exporter_runs_observed_total", "repository"
                        )
                    }
                )
                merged.samples.update(
                    (key, value)
                    for key, value in exposition.samples.items()
                    if key[0].startswith("cicd_pipeline_")
                )
            assert owners[0]
            assert owners[1]
            assert not owners[0] & owners[1]
            assert_matches_truth(merged, truth)
            # All it got, all handled (a delivery is counted `forwarded` once shard 1 answered).
            wait_for(
                lambda: scrape(url1).total(COUNTER) == _outcomes(url0).get("forwarded", 0) > 0,
                10,
                message="all forwarded and handled",
            )
            assert "failed" not in _outcomes(url0)
        sender.stop()


def _shard_configs(tmp_path: Path, sim: GitHubSimulator, port: int) -> list[Path]:
    """Two shards' configs: shard i listens on 127.0.0.1i:port and forwards to the other's."""
    configs = []
    for index in (0, 1):
        config, _ = hooks_config(
            tmp_path,
            sim,
            name=f"shard-{index}.yaml",
            state=tmp_path / f"state-{index}.db",
            host=f"127.0.0.1{index}",
            port=port,
            webhooks={"forward_url": f"http://127.0.0.1{{index}}:{port}/webhook"},
        )
        data = yaml.safe_load(config.read_text())
        data["sharding"] = {"total": 2, "index": index}
        config.write_text(yaml.safe_dump(data))
        configs.append(config)
    return configs


def _queued_job(repository: str) -> dict[str, Any]:
    """GitHub's example `workflow_job` `queued` delivery, for `repository`."""
    payload: dict[str, Any] = json.loads(EXAMPLE_QUEUED.read_text())
    payload["repository"]["full_name"] = repository
    return payload


def test_a_shard_that_owns_nothing_answers_and_forwards(tmp_path: Path) -> None:
    """Two shards, one repository: the shard that owns nothing still listens (the chart's Service
    sends it deliveries) and forwards a job to the owner, found by the configured name though the
    event spells it in another case; it is counted `forwarded` once the owner took it, and
    recorded there. A delivery already forwarded (marked, signed as the forwarder sends it) is
    `ignored`, never forwarded again. With the owner down, a forward is counted `failed`."""
    repository = "acme/webapp"
    owner = ShardingConfig(total=2).shard_of(f"repo:{repository}")
    # A spelling that hashes to the other shard: forwarding by the event's name would miss.
    spelling = next(
        name
        for name in ("ACME/webapp", "acme/WEBAPP", "Acme/WebApp", "ACME/WEBAPP", "acme/Webapp")
        if ShardingConfig(total=2).shard_of(f"repo:{name}") != owner
    )
    with validated_simulator("seed", token=TOKEN, repositories=(repository,)) as sim:
        port = free_port()
        configs = _shard_configs(tmp_path, sim, port)
        hook = f"http://127.0.0.1{1 - owner}:{port}/webhook"
        with running(configs[1 - owner], tmp_path) as other:
            with running(configs[owner], tmp_path) as url:
                assert deliver(hook, "workflow_job", _queued_job(spelling)).status_code == 202
                wait_for(lambda: _outcomes(other) == {"forwarded": 1}, 10, message="forwarded")
                wait_for(lambda: _outcomes(url) == {"recorded": 1}, 10, message="recorded")
                active = scrape(url).by("cicd_pipeline_task_run_active", "repository", "state")
                assert active[(repository, "queued")] == 1

                marked = {FORWARDED: str(owner)}
                again = deliver(hook, "workflow_job", _queued_job(repository), headers=marked)
                assert again.status_code == 200
                assert _outcomes(other) == {"forwarded": 1, "ignored": 1}
                assert _outcomes(url) == {"recorded": 1}
            assert deliver(hook, "workflow_job", _queued_job(repository)).status_code == 202
            wait_for(lambda: _outcomes(other).get("failed") == 1, 30, message="failed")
            assert _outcomes(other) == {"forwarded": 1, "ignored": 1, "failed": 1}


def _outcomes(url: str) -> dict[str, float]:
    """The webhook answers counted by outcome."""
    return {k[0]: v for k, v in scrape(url).by(COUNTER, "outcome").items()}


def _owns_all(exposition: Exposition, truth: dict[str, object]) -> bool:
    """Every attempt of the shard's repositories in truth has been observed."""
    observed = exposition.by("ci_pipeline_exporter_runs_observed_total", "repository")
    attempts = truth["attempts"]
    assert isinstance(attempts, list)
    return all(
        observed[(repo,)] == sum(1 for a in attempts if a["repository"] == repo)
        for (repo,) in observed
    )
