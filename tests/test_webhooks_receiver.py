"""The webhook listener from outside: GitHub's signature example, every bad input and its answer,
the octokit example payloads, the simulator's payloads against the webhook schemas, and many
deliveries at once — each answer counted by outcome."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import pytest
import yaml

from exporter.webhooks.signature import verify
from simulator.github import GitHubSimulator
from simulator.webhooks import events_between
from tests.conftest import START
from tests.helpers import (
    REFERENCE,
    TOKEN,
    free_port,
    printed_secrets,
    run_cli,
    scrape,
    serve,
    wait_for,
)
from tests.hooks import HOOK_ENV, SECRET, deliver, hooks_config, signature

EXAMPLES = REFERENCE / "github-api" / "examples"
COUNTER = "ci_pipeline_exporter_webhook_events_total"
SHORT_SECRET = {"TEST_WEBHOOK_SECRET": "abc"}


def _example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"webhook-{name}.json").read_text())
    return data


def test_github_documented_signature_example() -> None:
    """GitHub's documented example (secret "It's a Secret to Everybody", body "Hello, World!")
    verifies; a changed body, another secret, the SHA-1 header's format or no header do not."""
    secret, body = b"It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature(body, secret.decode()) == expected
    assert verify(secret, body, expected)
    assert not verify(secret, body + b" ", expected)
    assert not verify(b"another secret", body, expected)
    assert not verify(secret, body, "sha1=" + expected.removeprefix("sha256="))
    assert not verify(secret, body, None)
    assert not verify(secret, body, "sha256=\xe9" + expected[8:])  # non-ASCII: False, no raise


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[tuple[str, str, GitHubSimulator]]:
    """(metrics URL, webhook URL, simulator): acme/webapp with only its CI workflow configured,
    and the repositories of the octokit examples with all their workflows."""
    repositories = (
        "acme/webapp",
        "Codertocat/Hello-World",
        "wolfy1339/github-events-schemas",
        "lineville/elastic-machines-testing",
        "octo-org/octo-repo",
    )
    sim = GitHubSimulator("seed", repositories=repositories, token=TOKEN).start()
    config, hook_url = hooks_config(tmp_path, sim)
    data = yaml.safe_load(config.read_text())
    data["github"]["repositories"][0]["workflows"] = ["CI"]
    config.write_text(yaml.safe_dump(data))
    port = free_port()
    try:
        with serve(config, port, {"TEST_GITHUB_TOKEN": TOKEN, **HOOK_ENV}, tmp_path / "log"):
            url = f"http://127.0.0.1:{port}"
            # Ready: every repository's first poll is done (its history recorded).
            wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 30)
            yield url, hook_url, sim
    finally:
        sim.stop()


def _counts(url: str) -> dict[tuple[str, ...], float]:
    return scrape(url).by(COUNTER, "event", "action", "outcome")


def _job_event(repository: str, workflow: str = "CI") -> dict[str, Any]:
    payload = _example("workflow_job.queued")
    payload["repository"]["full_name"] = repository
    payload["workflow_job"]["workflow_name"] = workflow
    return payload


def test_bad_inputs_answered_and_counted(
    exporter: tuple[str, str, GitHubSimulator], tmp_path: Path
) -> None:
    """401 for a missing, SHA-1-only or wrong signature, or one with non-ASCII bytes; 400 for
    malformed JSON or a payload that is not a workflow_job (logged naming the field); 405 for
    other methods; 404 for other paths; 2xx for ping, unsubscribed events, unknown repositories
    and unconfigured workflows — nothing recorded, every answer counted."""
    url, hook, _ = exporter
    body = json.dumps(_job_event("acme/webapp")).encode()
    headers = {"X-GitHub-Event": "workflow_job", "Content-Type": "application/json"}
    sha1 = {"X-Hub-Signature": "sha1=" + "0" * 40}
    assert httpx.post(hook, content=body, headers=headers).status_code == 401
    assert httpx.post(hook, content=body, headers={**headers, **sha1}).status_code == 401
    assert deliver(hook, "workflow_job", body, secret="wrong").status_code == 401
    latin1 = {k.encode(): v.encode() for k, v in headers.items()}  # raw bytes on the wire
    latin1[b"X-Hub-Signature-256"] = b"sha256=\xe9" + b"0" * 63
    assert httpx.post(hook, content=body, headers=latin1).status_code == 401
    assert deliver(hook, "workflow_job", b"{not json").status_code == 400
    assert deliver(hook, "workflow_job", [1, 2]).status_code == 400
    broken = _job_event("acme/webapp")
    del broken["workflow_job"]["id"]
    assert deliver(hook, "workflow_job", broken).status_code == 400
    assert httpx.get(hook).status_code == 405
    assert httpx.put(hook, content=body).status_code == 405
    assert httpx.post(hook.replace("/webhook", "/other"), content=body).status_code == 404
    assert deliver(hook, "ping", {"zen": "Keep it logically awesome.", "hook_id": 1}).is_success
    assert deliver(hook, "issues", {"action": "opened"}).is_success
    assert deliver(hook, "workflow_job", _job_event("someone/else")).is_success
    assert deliver(hook, "workflow_job", _job_event("acme/webapp", "Nightly")).is_success

    counts = wait_for(lambda: (c := _counts(url)) and sum(c.values()) >= 14 and c, 10)
    assert counts == {
        ("workflow_job", "", "rejected"): 6.0,  # four signatures, two bodies
        ("workflow_job", "queued", "rejected"): 1.0,  # not a workflow_job payload
        ("other", "", "rejected"): 3.0,  # GET, PUT, another path
        ("ping", "", "ignored"): 1.0,
        ("other", "other", "ignored"): 1.0,
        ("workflow_job", "queued", "ignored"): 2.0,  # unknown repository, other workflow
    }
    exposition = scrape(url)
    assert exposition.total("cicd_pipeline_task_run_active") == 0
    assert "workflow_job.id: Field required" in (tmp_path / "log").read_text()


def test_repository_names_match_ignoring_case(
    exporter: tuple[str, str, GitHubSimulator], tmp_path: Path
) -> None:
    """GitHub's names ignore case: a job of `ACME/WebApp` is recorded for the configured
    `acme/webapp` (its series under the configured spelling), not ignored. A repository that is
    not configured is ignored, and its first event — whatever its case — is logged once."""
    url, hook, _ = exporter
    assert deliver(hook, "workflow_job", _job_event("ACME/WebApp")).status_code == 202
    for name in ("someone/else", "Someone/Else", "someone/else"):
        assert deliver(hook, "workflow_job", _job_event(name)).status_code == 200
    counts = wait_for(lambda: (c := _counts(url)) and sum(c.values()) >= 4 and c, 10)
    assert counts == {
        ("workflow_job", "queued", "recorded"): 1.0,
        ("workflow_job", "queued", "ignored"): 3.0,
    }
    active = scrape(url).by("cicd_pipeline_task_run_active", "repository", "state")
    assert active[("acme/webapp", "queued")] == 1
    assert not any(repository != "acme/webapp" for repository, _ in active)
    logged = [
        line
        for line in (tmp_path / "log").read_text().splitlines()
        if "repository not in github.repositories" in line
    ]
    assert len(logged) == 1, logged
    assert json.loads(logged[0])["repository"] == "someone/else"


def test_body_over_the_limit_refused_before_it_is_read(
    exporter: tuple[str, str, GitHubSimulator],
) -> None:
    """A declared body over max_body_bytes gets 413 while most of it is still unsent: the
    listener does not read it (the test sends 1 KiB of a declared 10 MiB and reads the answer)."""
    url, hook, _ = exporter
    parts = urlsplit(hook)
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nX-GitHub-Event: workflow_job\r\n"
        f"Content-Type: application/json\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n"
    ).encode() + b"{" * 1024
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    assert wait_for(lambda: _counts(url).get(("workflow_job", "", "rejected")), 10) == 1.0


def test_octokit_examples(exporter: tuple[str, str, GitHubSimulator]) -> None:
    """The octokit example payloads are accepted: a completed job is recorded once (the failure
    variant of the same job and attempt, and its late queued event, are duplicates); the job
    still in progress and the one waiting on a deployment rule show in the live gauge."""
    url, hook, _ = exporter
    order = (
        "workflow_job.queued",
        "workflow_job.in_progress",
        "workflow_job.completed.success.with-organization",
        "workflow_job.completed.failure.with-organization",
        "workflow_job.queued",
        "workflow_job.in_progress.with-queued-steps",
        "workflow_job.queued.with-deployment",
        "workflow_job.waiting",
        "workflow_run.requested",
        "workflow_run.completed",
        "workflow_run.completed.with-pull-requests",
        "workflow_run.requested.with-conclusion",
    )
    for name in order:
        event = name.split(".", 1)[0]
        assert deliver(hook, event, _example(name)).status_code in (200, 202), name
    counts = wait_for(lambda: (c := _counts(url)) and sum(c.values()) >= len(order) and c, 10)
    assert counts[("workflow_job", "completed", "recorded")] == 1
    assert counts[("workflow_job", "completed", "duplicate")] == 1
    assert counts[("workflow_job", "queued", "duplicate")] == 1
    assert not any(outcome in ("rejected", "failed") for _, _, outcome in counts)
    exposition = scrape(url)
    done = _example("workflow_job.completed.success.with-organization")["workflow_job"]
    durations = exposition.by(
        "cicd_pipeline_task_run_duration_seconds_count", "repository", "job_name", "result"
    )
    assert durations[("Codertocat/Hello-World", done["name"], "success")] == 1
    active = {
        k: v
        for k, v in exposition.by(
            "cicd_pipeline_task_run_active", "repository", "workflow", "runner_labels", "state"
        ).items()
        if v
    }
    assert active == {
        ("wolfy1339/github-events-schemas", "Test", "ubuntu-latest", "executing"): 1.0,
        ("lineville/elastic-machines-testing", "Env Test", "k8s,self-hosted", "waiting"): 1.0,
    }


def test_simulator_payloads_match_the_webhook_schemas() -> None:
    """A day of the runner-shortage scenario's webhooks (every action of runs and jobs,
    self-hosted labels, failures with skipped steps) is valid against the octokit schemas."""
    schemas = {
        name: json.loads(
            (REFERENCE / "github-api" / "schemas" / f"webhook-{name}.json").read_text()
        )
        for name in ("workflow_job", "workflow_run")
    }
    sim = GitHubSimulator("shortage", repositories=("acme/webapp",), start=START)
    events = events_between(sim, START - 86400, START)
    actions = {(e.name, e.action) for e in events}
    assert len(actions) == 6
    for event in events:
        errors = list(jsonschema.Draft7Validator(schemas[event.name]).iter_errors(event.payload))
        assert not errors, (event.name, event.action, errors[0].message[:200])


def test_many_deliveries_at_once(exporter: tuple[str, str, GitHubSimulator]) -> None:
    """200 deliveries in flight together — 100 completed jobs, each delivered twice under one
    delivery id (a repository and an organisation hook) — all answered 2xx; each job recorded
    exactly once."""
    url, hook, sim = exporter
    before = scrape(url).total("cicd_pipeline_task_run_duration_seconds_count")
    now = sim.clock.now()
    sim.clock.advance(12 * 3600)
    completed = [
        e
        for e in events_between(sim, now, now + 12 * 3600)
        if e.name == "workflow_job"
        and e.action == "completed"
        and e.payload["repository"]["full_name"] == "acme/webapp"
    ][:100]
    assert len(completed) == 100
    twice = [e for e in completed for _ in range(2)]
    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(
            pool.map(
                lambda e: deliver(hook, e.name, e.payload, delivery=e.delivery).status_code, twice
            )
        )
    assert statuses.count(202) == 200
    counts = wait_for(
        lambda: (
            (c := _counts(url)) and c.get(("workflow_job", "completed", "duplicate")) == 100 and c
        ),
        30,
    )
    assert counts[("workflow_job", "completed", "recorded")] == 100
    after = scrape(url).total("cicd_pipeline_task_run_duration_seconds_count")
    assert after - before == 100


def test_webhook_secret_in_check_config_and_missing_at_start(tmp_path: Path) -> None:
    """check-config names where the webhook secret comes from, never its value; `serve` without it,
    or with one shorter than 4 characters, stops at once with one line naming the key (exit 2),
    never the value; a bad forward_url is refused by name."""
    sim = GitHubSimulator("seed", repositories=("acme/webapp",), token=TOKEN)
    config, _ = hooks_config(tmp_path, sim)
    shown = run_cli("check-config", str(config), env={"TEST_GITHUB_TOKEN": TOKEN, **HOOK_ENV})
    assert shown.returncode == 0, shown.stderr
    secrets = printed_secrets(shown.stdout)
    assert secrets["github.webhooks.secret"] == "<redacted> from $TEST_WEBHOOK_SECRET"
    assert SECRET not in shown.stdout
    missing = run_cli("serve", "--config", str(config), env={"TEST_GITHUB_TOKEN": TOKEN})
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "ci-pipeline-exporter: config error: github.webhooks.secret_env: "
        "environment variable TEST_WEBHOOK_SECRET is not set"
    ]
    short = run_cli(
        "serve", "--config", str(config), env={"TEST_GITHUB_TOKEN": TOKEN, **SHORT_SECRET}
    )
    assert short.returncode == 2
    assert short.stderr.strip().splitlines() == [
        "ci-pipeline-exporter: config error: github.webhooks.secret_env: "
        "the webhook secret is shorter than 4 characters; use a long random value"
    ]
    data = yaml.safe_load(config.read_text())
    data["github"]["webhooks"]["forward_url"] = "http://shard:9470/webhook"
    config.write_text(yaml.safe_dump(data))
    bad = run_cli("check-config", str(config), env={"TEST_GITHUB_TOKEN": TOKEN, **HOOK_ENV})
    assert bad.returncode == 2
    assert "github.webhooks.forward_url" in bad.stderr
    assert "{index}" in bad.stderr
