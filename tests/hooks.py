"""Helpers for the webhook tests: a config with webhooks on, signed deliveries, the live gauges the
simulator's timeline implies at a moment (the test's own arithmetic)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from simulator.github import GitHubSimulator
from tests.helpers import free_port, write_config

SECRET = "It's a Secret to Everybody"
HOOK_ENV = {"TEST_WEBHOOK_SECRET": SECRET}


def hooks_config(
    tmp_path: Path,
    sim: GitHubSimulator,
    *,
    reconcile: str = "1h",
    name: str = "config.yaml",
    state: Path | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    **extra: Any,
) -> tuple[Path, str]:
    """(config path, webhook URL): webhooks on a free loopback port."""
    port = port or free_port()
    hooks = {
        "listen": f"{host}:{port}",
        "secret_env": "TEST_WEBHOOK_SECRET",
        "reconcile_interval": reconcile,
        "max_body_bytes": 64 * 1024,
        **extra.pop("webhooks", {}),
    }
    path = write_config(
        tmp_path / name,
        sim.url,
        state=state or tmp_path / "state.db",
        repositories=list(sim.timelines),
        webhooks=hooks,
        **extra,
    )
    return path, f"http://{host}:{port}/webhook"


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(
    url: str,
    event: str,
    payload: Any,
    *,
    delivery: str | None = None,
    secret: str = SECRET,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One signed delivery, as GitHub sends it."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sent = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature(body, secret),
        **(headers or {}),
    }
    return httpx.post(url, content=body, headers=sent, timeout=10)


def live_jobs(sim: GitHubSimulator, t: float) -> Counter[tuple[str, str, str]]:
    """Open jobs at t by (repository, runner labels, state), from the simulator's timeline."""
    found: Counter[tuple[str, str, str]] = Counter()
    for repository, timeline in sim.timelines.items():
        for run in timeline.runs_until(t):
            for attempt in run.attempts:
                for job in attempt.jobs:
                    labels = ",".join(sorted(job.labels))
                    if job.conclusion == "skipped" or not job.created_at <= t < job.completed_at:
                        continue
                    state = "queued" if t < job.started_at else "executing"
                    found[(repository, labels, state)] += 1
    return found


def quiet_moment(sim: GitHubSimulator, after: float) -> float:
    """The first moment after `after` when no job of any repository is open."""
    t = after
    while live_jobs(sim, t):
        t += 30
    return t
