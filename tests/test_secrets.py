"""The token appears in no log line, error or output."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from exporter.logging import SECRETS, SecretRegistry, configure_logging, get_logger
from simulator.github import Faults, GitHubSimulator
from tests.helpers import TOKEN, run_cli


def test_token_never_in_output(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str]
) -> None:
    """At debug level, through successes, 5xx and rate limits, and a rejected token, the token is
    in no stdout or stderr line."""
    sim.set_faults(Faults(error_rate=0.3, rate_limit_rate=0.1, retry_after=True, seed=3))
    outputs = []
    result = run_cli("once", "--config", str(config_file), "--log-level", "debug", env=env)
    outputs.append(result.stdout + result.stderr)
    sim.set_faults(Faults())
    wrong = "ghp_WRONGwrongWRONGwrongWRONGwrong0123456"
    result = run_cli(
        "once",
        "--config",
        str(config_file),
        "--log-level",
        "debug",
        env={"TEST_GITHUB_TOKEN": wrong},
    )
    assert result.returncode == 1
    outputs.append(result.stdout + result.stderr)
    result = run_cli("check-config", str(config_file), env=env)
    outputs.append(result.stdout + result.stderr)
    text = "\n".join(outputs)
    assert TOKEN not in text
    assert wrong not in text
    assert "HTTP Request" in text  # httpx's own lines were bridged in at debug level


def test_scrubbing_of_log_events() -> None:
    """Registered secrets, token-shaped strings, Authorization values and signed URLs are redacted
    in structlog events and in bridged stdlib records."""
    stream = io.StringIO()
    configure_logging("json", "debug", stream=stream)
    SECRETS.add("s3cr3t-value-123")
    log = get_logger("test")
    log.info(
        "event",
        token="abc",
        headers={"Authorization": "Bearer xyz123456789"},
        url="https://x/logs?sig=abcdef&ok=1",
        note="value s3cr3t-value-123 ghp_" + "a" * 36,
    )
    logging.getLogger("httpx").debug(
        "HTTP Request: Authorization: Bearer eyJabcdefghij.klmnopqrstu.vwxyz"
    )
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    text = stream.getvalue()
    assert "s3cr3t-value-123" not in text
    assert "xyz123456789" not in text
    assert "abcdef" not in text
    assert "ghp_aaaa" not in text
    assert "eyJabcdefghij" not in text
    assert lines[0]["token"] == "<redacted>"
    assert "ok=1" in lines[0]["url"]


def test_rotating_secrets_kept_until_they_expire_and_bounded() -> None:
    """A registry token per image repository, cached until it expires: with 1,000 repositories
    every still-valid one is scrubbed (only the 64 most recent were). Tokens minted for months
    leave the registry bounded: expired ones (past a grace) go; configured secrets stay."""
    now = [1_000_000.0]
    registry = SecretRegistry(grace=300.0, clock=lambda: now[0])
    registry.add("configured-token-0001")
    for index in range(1000):
        registry.add(f"registry-token-{index:06d}", rotating=True, expires_at=now[0] + 3600)
    assert len(registry) == 1001
    text = registry.scrub("configured-token-0001 registry-token-000000 registry-token-000999")
    assert text == "<redacted> <redacted> <redacted>"
    for hour in range(1, 24 * 60):  # two months of hourly tokens, each valid for an hour
        now[0] += 3600
        registry.add(f"installation-token-{hour:06d}", rotating=True, expires_at=now[0] + 3600)
    assert len(registry) == 3  # the configured one, the current and the previous token
    text = registry.scrub("configured-token-0001 registry-token-000001 installation-token-001439")
    assert text == "<redacted> registry-token-000001 <redacted>"  # long expired, forgotten


def test_rotating_secrets_beyond_the_bound_go_soonest_expiring_first() -> None:
    """Past `max_rotating` still-valid tokens (a bound on memory), the one that expires soonest
    is dropped, not the newest; a token without an expiry lives `default_life`."""
    now = [0.0]
    registry = SecretRegistry(max_rotating=3, default_life=600.0, clock=lambda: now[0])
    registry.add("token-late", rotating=True, expires_at=5000.0)
    registry.add("token-soon", rotating=True, expires_at=100.0)
    registry.add("token-default", rotating=True)  # 600
    registry.add("token-newest", rotating=True, expires_at=3000.0)
    assert registry.scrub("token-soon token-late token-default token-newest") == (
        "token-soon <redacted> <redacted> <redacted>"
    )
    now[0] = 1000.0  # token-default expired 400 s ago: past the 300 s grace, gone
    registry.add("token-other", rotating=True, expires_at=2000.0)
    assert registry.scrub("token-default token-newest") == "token-default <redacted>"
