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


def test_rotating_secrets_are_bounded_and_configured_ones_kept() -> None:
    """An installation or registry token minted every few minutes for months leaves the registry
    bounded: the most recent rotating values and every configured secret are still scrubbed."""
    registry = SecretRegistry(keep_rotating=64)
    registry.add("configured-token-0001")
    for index in range(10_000):
        registry.add(f"registry-token-{index:06d}", rotating=True)
    assert len(registry) == 65
    text = registry.scrub("configured-token-0001 registry-token-009999 registry-token-000001")
    assert text == "<redacted> <redacted> registry-token-000001"  # long expired, forgotten
