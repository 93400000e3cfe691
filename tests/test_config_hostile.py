"""Configuration under hostile or careless input: every refusal is one line naming the key, exit 2,
no traceback, no secret echoed, and no memory or time blow-up (run under an address-space limit).
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import ConfigError, load_config
from tests.helpers import ROOT, TOKEN, exporter_cmd, printed_secrets, run_cli

REPO = {"name": "acme/webapp"}
VALID: dict[str, Any] = {"github": {"repositories": [REPO]}}
# Address space for one check-config process: several times what it needs (≈ 200–300 MB with
# its imports), far below what the blow-ups took (3.9 GB, 7 GB): they fail instead of swapping.
MEMORY_LIMIT = 1024 * 1024 * 1024
PREFIX = "ci-pipeline-exporter: config error: "


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_limited(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI under MEMORY_LIMIT; the generous timeout is the failure mode of a slow blow-up."""
    return subprocess.run(
        exporter_cmd(*args),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        cwd=ROOT,
        preexec_fn=_limit_memory,
    )


def assert_config_error(result: subprocess.CompletedProcess[str], key: str) -> str:
    """Exit 2 and exactly one stderr line, the config error naming `key`; returns that line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(PREFIX), lines[0]
    assert key in lines[0], lines[0]
    return lines[0]


def _write(tmp_path: Path, data: object, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# --- 1. CIPE_ variables that are not configuration ---------------------------------------------


def test_cli_and_other_cipe_variables_are_not_config(tmp_path: Path) -> None:
    """The documented CIPE_CLI_LOG_FORMAT/LEVEL and other CIPE_ names that are no config key
    (project switches, the demo's token) leave check-config working."""
    result = run_cli(
        "check-config",
        str(_write(tmp_path, VALID)),
        env={
            "CIPE_CLI_LOG_FORMAT": "json",
            "CIPE_CLI_LOG_LEVEL": "debug",
            "CIPE_REQUIRE_INTEGRATION": "1",
            "CIPE_DEMO_TOKEN": "demo",
            "CIPE_SOMETHING_ELSE": "x",
        },
    )
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["github"]["repositories"][0]["name"] == "acme/webapp"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """The environment wins over the file, key by key: a nested scalar, the sharding pair the
    Helm chart sets, and a whole list given as a JSON value; untouched file keys stay."""
    data = {"github": {"poll_interval": "5m", "timeout": "20s", "repositories": [REPO]}}
    config = load_config(
        _write(tmp_path, data),
        environ={
            "CIPE_GITHUB__POLL_INTERVAL": "30s",
            "CIPE_SHARDING__TOTAL": "3",
            "CIPE_SHARDING__INDEX": "2",
            "CIPE_GITHUB__REPOSITORIES": '[{"name": "acme/x", "branches": ["main", "release"]}]',
        },
    )
    assert config.github is not None
    assert (config.github.poll_interval, config.github.timeout) == (30, 20)
    assert (config.sharding.total, config.sharding.index) == (3, 2)
    assert [(r.name, r.branches) for r in config.github.repositories] == [
        ("acme/x", ["main", "release"])
    ]


def test_list_values_from_the_environment_may_be_yaml(tmp_path: Path) -> None:
    """A list value in the environment may be YAML flow style as well as JSON."""
    config = load_config(
        _write(tmp_path, {}),
        environ={"CIPE_GITHUB__REPOSITORIES": "[{name: acme/x, branches: [main, release]}]"},
    )
    assert config.github is not None
    assert config.github.repositories[0].branches == ["main", "release"]


def test_unknown_key_under_a_config_section_is_refused(tmp_path: Path) -> None:
    """A variable under a config section that names no key is a typo, refused with the key and
    the variable."""
    with pytest.raises(
        ConfigError,
        match=r"^github\.poll_intervall \(from CIPE_GITHUB__POLL_INTERVALL\): unknown key$",
    ):
        load_config(_write(tmp_path, VALID), environ={"CIPE_GITHUB__POLL_INTERVALL": "1m"})


# --- 2. list indexes in variable names ---------------------------------------------------------


def test_list_index_in_a_variable_is_refused_without_allocating(tmp_path: Path) -> None:
    """CIPE_GITHUB__REPOSITORIES__100000000__NAME used to pad a list to 10⁸ items (3.9 GB); it is
    refused with one line naming the variable, under a 1 GiB address-space limit."""
    name = "CIPE_GITHUB__REPOSITORIES__100000000__NAME"
    result = run_limited("check-config", str(_write(tmp_path, VALID)), env={name: "acme/x"})
    line = assert_config_error(result, name)
    assert "CIPE_GITHUB__REPOSITORIES" in line.removeprefix(PREFIX + name)


def test_small_list_index_is_refused_too(tmp_path: Path) -> None:
    """Setting one item by index is not supported; the message says how to set the list."""
    with pytest.raises(ConfigError, match=r"CIPE_GITHUB__REPOSITORIES__0__BRANCHES: .*index"):
        load_config(
            _write(tmp_path, VALID),
            environ={"CIPE_GITHUB__REPOSITORIES__0__BRANCHES": "[main, release]"},
        )


# --- 3. YAML size and alias budget -------------------------------------------------------------


def _bomb(aliases: int = 1999, jobs: int = 20_000) -> str:
    """≈ 250 KB: one anchored list of 20,000 names, used four times in an anchored repository
    that is aliased 1,999 times (aliases of a node holding aliases): 160 million list items once
    expanded, where the file has 20,000."""
    job_list = ", ".join(f"job-{i:05d}" for i in range(jobs))
    repository = (
        f"{{name: acme/x, branches: &j [{job_list}], workflows: *j, "
        "logs: {jobs: *j}, junit: {artifacts: *j}}"
    )
    lines = ["github:", "  repositories:", f"  - &r {repository}", *["  - *r"] * aliases]
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_before_expansion(tmp_path: Path) -> None:
    """A 250 KB alias bomb (like the one that took 7 GB over 113 s) is refused before it expands,
    under a 1 GiB address-space limit."""
    text = _bomb()
    assert 200_000 < len(text) < 300_000
    result = run_limited("check-config", str(_write(tmp_path, text)))
    line = assert_config_error(result, "config.yaml")
    assert "github" in line
    assert "nodes" in line


def test_classic_billion_laughs_is_refused(tmp_path: Path) -> None:
    """Ten levels of nine aliases of the level before (10⁹ strings) are refused."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        items = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{items}]")
    result = run_limited("check-config", str(_write(tmp_path, "\n".join(lines))))
    assert_config_error(result, "nodes")


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    """An anchor that contains itself is refused, not followed forever."""
    with pytest.raises(ConfigError, match="refers to itself"):
        load_config(_write(tmp_path, "github: &g {repositories: [*g]}\n"), environ={})


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    """100,000 nested brackets are refused with one line, no RecursionError traceback."""
    result = run_limited("check-config", str(_write(tmp_path, "listen: " + "[" * 100_000)))
    assert_config_error(result, "config.yaml")


def test_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    """A file over 1 MiB is refused by its size (a comment is enough to make it large)."""
    text = yaml.safe_dump(VALID) + "#" + "x" * (1024 * 1024) + "\n"
    result = run_limited("check-config", str(_write(tmp_path, text)))
    assert "1 MiB" in assert_config_error(result, "config.yaml")


def test_alias_bomb_in_an_environment_value_is_refused(tmp_path: Path) -> None:
    """A list given in the environment goes through the same budget."""
    bomb = "[" + ", ".join(["*r"] * 1999) + "]"
    value = f"[&r {{name: acme/x, logs: {{jobs: &j [{', '.join(['x'] * 5000)}]}}}}, {bomb[1:]}"
    result = run_limited(
        "check-config", str(_write(tmp_path, {})), env={"CIPE_GITHUB__REPOSITORIES": value}
    )
    assert_config_error(result, "repositories")


def test_a_few_anchors_still_load(tmp_path: Path) -> None:
    """Shared repository settings through an anchor, a merge key and an aliased list load."""
    inline = """
github:
  repositories:
    - &webapp {name: acme/webapp, branches: &branches [main, release], logs: {jobs: ["build*"]}}
    - {<<: *webapp, name: acme/api, workflows: [CI]}
    - {name: acme/docs, branches: *branches}
"""
    config = load_config(_write(tmp_path, inline), environ={})
    assert config.github is not None
    repos = config.github.repositories
    assert [r.name for r in repos] == ["acme/webapp", "acme/api", "acme/docs"]
    assert all(r.branches == ["main", "release"] for r in repos)
    assert repos[1].logs.jobs == ["build*"]
    assert repos[1].workflows == ["CI"]


# --- 4. durations and integer bounds -----------------------------------------------------------


def _github(**settings: object) -> dict[str, Any]:
    return {"github": {"repositories": [REPO], **settings}}


def _registry(**settings: object) -> dict[str, Any]:
    return {"registries": [{"url": "https://registry.example", **settings}]}


def _cache(**settings: object) -> dict[str, Any]:
    return {"github": {"repositories": [{**REPO, "actions_cache": settings}]}}


def _logs(**settings: object) -> dict[str, Any]:
    return {"github": {"repositories": [{**REPO, "logs": settings}]}}


def _junit(**settings: object) -> dict[str, Any]:
    return {"github": {"repositories": [{**REPO, "junit": settings}]}}


BAD_VALUES: list[tuple[str, Callable[..., dict[str, Any]], str, object]] = [
    ("github.poll_interval", _github, "poll_interval", float("nan")),
    ("github.poll_interval", _github, "poll_interval", float("inf")),
    ("github.lookback", _github, "lookback", float("-inf")),
    ("github.poll_interval", _github, "poll_interval", "99999999999999999999999d"),
    ("github.lookback", _github, "lookback", "366d"),
    ("github.lookback", _github, "lookback", 10**400),
    ("github.timeout", _github, "timeout", 0),
    ("github.timeout", _github, "timeout", "0s"),
    ("github.poll_interval", _github, "poll_interval", 0),
    ("github.secondary_rate_limit_wait", _github, "secondary_rate_limit_wait", 0),
    ("github.retry_backoff", _github, "retry_backoff", 0),
    ("github.rate_limit_reserve", _github, "rate_limit_reserve", float("nan")),
    ("registries.0.poll_interval", _registry, "poll_interval", 0),
    ("registries.0.timeout", _registry, "timeout", 0),
    ("registries.0.timeout", _registry, "timeout", float("nan")),
    ("github.repositories.0.actions_cache.poll_interval", _cache, "poll_interval", float("nan")),
    ("github.repositories.0.actions_cache.limit_bytes", _cache, "limit_bytes", 10**400),
    ("github.repositories.0.logs.max_bytes", _logs, "max_bytes", 10**30),
    ("github.repositories.0.logs.max_instructions", _logs, "max_instructions", 10**9),
    ("github.repositories.0.junit.max_download_bytes", _junit, "max_download_bytes", 10**30),
    ("github.repositories.0.junit.max_uncompressed_bytes", _junit, "max_uncompressed_bytes", 2**63),
    ("github.repositories.0.junit.max_suites", _junit, "max_suites", 10**9),
]


@pytest.mark.parametrize(("key", "build", "field", "value"), BAD_VALUES)
def test_absurd_values_are_refused_naming_the_key(
    tmp_path: Path, key: str, build: Callable[..., dict[str, Any]], field: str, value: object
) -> None:
    """NaN, infinities, durations past 365 days, zero intervals/timeouts/waits and absurd byte
    or count limits are refused with the key named."""
    with pytest.raises(ConfigError, match="^" + re.escape(key) + ": "):
        load_config(_write(tmp_path, build(**{field: value})), environ={})


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            "github: {poll_interval: .nan, repositories: [{name: acme/webapp}]}",
            "github.poll_interval",
        ),
        ("github: {lookback: .inf, repositories: [{name: acme/webapp}]}", "github.lookback"),
        ("github: {poll_interval: 99999999999999999999999d}", "github.poll_interval"),
        ("github: {timeout: 0}", "github.timeout"),
        (
            "registries: [{url: 'https://r.example', poll_interval: 0}]",
            "registries.0.poll_interval",
        ),
    ],
)
def test_check_config_refuses_bad_durations_in_one_line(
    tmp_path: Path, text: str, key: str
) -> None:
    """check-config used to crash with a traceback on NaN and pass a 10²³-day interval that
    `serve` then died on: now one line naming the key, exit 2."""
    result = run_cli("check-config", str(_write(tmp_path, text + "\n")))
    assert_config_error(result, key)


def test_durations_at_the_bounds_load(tmp_path: Path) -> None:
    """365 days and small positive durations are accepted; zero is fine where it is no timer:
    no re-run window, and the Actions cache read on every GitHub poll."""
    data = _github(lookback="365d", rerun_window=0, timeout="0.5s")
    data["github"]["repositories"] = [{**REPO, "actions_cache": {"poll_interval": 0}}]
    config = load_config(_write(tmp_path, data), environ={})
    assert config.github is not None
    assert (config.github.lookback, config.github.rerun_window) == (365 * 86400, 0)
    assert config.github.timeout == 0.5
    assert config.github.repositories[0].actions_cache.poll_interval == 0


def test_duration_from_the_environment_is_bounded(tmp_path: Path) -> None:
    """The same bounds hold for a duration given in the environment (named in the error)."""
    with pytest.raises(
        ConfigError, match=r"^github\.poll_interval \(from CIPE_GITHUB__POLL_INTERVAL\): "
    ):
        load_config(_write(tmp_path, VALID), environ={"CIPE_GITHUB__POLL_INTERVAL": "nan"})


# --- 5. credentials in URLs --------------------------------------------------------------------

PASSWORD = "hunter2-Sup3rS3cret"


@pytest.mark.parametrize(
    ("data", "env", "key"),
    [
        (
            {"registries": [{"url": f"http://user:{PASSWORD}@127.0.0.1:5000"}]},
            {},
            "registries.0.url",
        ),
        ({"registries": [{"url": f"https://{PASSWORD}@registry.example"}]}, {}, "registries.0.url"),
        (
            _github(api_url=f"https://x-access-token:{PASSWORD}@github.example/api/v3"),
            {},
            "github.api_url",
        ),
        (VALID, {"CIPE_GITHUB__API_URL": f"https://u:{PASSWORD}@github.example"}, "github.api_url"),
        (
            _github(api_url=f"https://github.example/api/v3?access_token={PASSWORD}"),
            {},
            "github.api_url",
        ),
        ({"registries": [{"url": f"ftp://u:{PASSWORD}@registry.example"}]}, {}, "registries.0.url"),
        (_github(api_url=f"u:{PASSWORD}@github.example"), {}, "github.api_url"),
    ],
)
def test_credentials_in_urls_are_refused_without_echo(
    tmp_path: Path, data: dict[str, Any], env: dict[str, str], key: str
) -> None:
    """A URL with user:password (or a token in its query) is refused naming the key; the password
    is in neither stdout nor stderr."""
    result = run_cli("check-config", str(_write(tmp_path, data)), env=env)
    line = assert_config_error(result, key)
    assert PASSWORD not in result.stdout + result.stderr
    assert "username_env" in line or "token" in line or "http" in line


def test_check_config_never_prints_a_secret_value(tmp_path: Path) -> None:
    """With the token and registry credentials set, check-config shows where they come from and
    never their values."""
    data = {
        **_github(),
        "registries": [
            {
                "url": "https://registry.example",
                "username_env": "REG_USER",
                "password_env": "REG_PASSWORD",
            }
        ],
    }
    result = run_cli(
        "check-config",
        str(_write(tmp_path, data)),
        env={"GITHUB_TOKEN": TOKEN, "REG_USER": "robot-user-xyz", "REG_PASSWORD": PASSWORD},
    )
    assert result.returncode == 0, result.stderr
    secrets = printed_secrets(result.stdout)
    assert secrets["registries.0.password"] == "<redacted> from $REG_PASSWORD"
    for value in (TOKEN, PASSWORD, "robot-user-xyz"):
        assert value not in result.stdout + result.stderr
