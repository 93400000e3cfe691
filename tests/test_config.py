"""Configuration: YAML, CIPE_ environment overrides, durations, errors naming the key, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter.config import ConfigError, load_config, validate_config
from exporter.timeutil import format_duration, parse_duration
from tests.helpers import TOKEN, printed_secrets, run_cli

VALID = {
    "github": {"repositories": [{"name": "acme/webapp"}]},
    "targets": [
        {"repository": "acme/webapp", "workflow": "CI", "target": {"lower": "10m", "upper": "12m"}}
    ],
}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604800), (45, 45)],
)
def test_durations(text: object, seconds: float) -> None:
    """The contract's duration forms parse to seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "abc", "10x", "-5", True, None])
def test_bad_durations(bad: object) -> None:
    """Anything else is rejected."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_format_duration_round_trips() -> None:
    """Effective config prints durations in their shortest exact form."""
    assert [format_duration(s) for s in (600, 90, 7200, 86400, 1.5)] == [
        "10m",
        "90s",
        "2h",
        "1d",
        "1.5s",
    ]


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_env_overrides_set_nested_keys(tmp_path: Path) -> None:
    """CIPE_GITHUB__POLL_INTERVAL=30s overrides github.poll_interval; a list is given whole."""
    config = load_config(
        _write(tmp_path, VALID),
        environ={
            "CIPE_GITHUB__POLL_INTERVAL": "30s",
            "CIPE_GITHUB__REPOSITORIES": "[{name: acme/webapp, branches: [main, release]}]",
            "CIPE_LISTEN": "127.0.0.1:9999",
            "CIPE_REQUIRE_INTEGRATION": "1",
        },
    )
    assert config.github is not None
    assert config.github.poll_interval == 30
    assert config.github.repositories[0].branches == ["main", "release"]
    assert config.listen == "127.0.0.1:9999"


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda c: c["github"].update(poll_intervall="1m"), "github.poll_intervall: unknown key"),
        (lambda c: c["github"].update(poll_interval="soon"), "github.poll_interval"),
        (
            lambda c: c["github"]["repositories"][0].update(name="no-slash"),
            "github.repositories.0.name",
        ),
        (
            lambda c: c["github"]["repositories"][0].update(branches="main"),
            "github.repositories.0.branches",
        ),
        (lambda c: c["targets"][0].update(repository="acme/other"), "targets.0.repository"),
        (lambda c: c["targets"][0]["target"].update(lower="20m"), "targets.0.target"),
        (lambda c: c.update(listen="nowhere"), "listen"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, mutate: object, key: str) -> None:
    """Unknown keys and wrong types are rejected with a message naming the key."""
    data = yaml.safe_load(yaml.safe_dump(VALID))
    mutate(data)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(_write(tmp_path, data), environ={})


def test_env_override_errors_name_the_key(tmp_path: Path) -> None:
    """A bad value from the environment names the config key it sets."""
    with pytest.raises(ConfigError, match=r"github\.poll_interval"):
        load_config(_write(tmp_path, VALID), environ={"CIPE_GITHUB__POLL_INTERVAL": "often"})


def test_env_overrides_create_missing_sections() -> None:
    """A variable sets a key of a section the file doesn't have (the image sets state.path)."""
    config = load_config(None, environ={"CIPE_STATE__PATH": "/var/lib/x.db"})
    assert config.state.path == "/var/lib/x.db"


def test_check_config_exit_2_naming_the_key(tmp_path: Path) -> None:
    """check-config on a bad file exits 2 with a one-line message naming the key, no traceback."""
    bad = yaml.safe_load(yaml.safe_dump(VALID))
    bad["github"]["lookback"] = "forever"
    result = run_cli("check-config", str(_write(tmp_path, bad)))
    assert result.returncode == 2
    assert "github.lookback" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_config_prints_effective_config_without_secrets(tmp_path: Path) -> None:
    """The effective config shows defaults and where the token comes from, never its value."""
    result = run_cli("check-config", str(_write(tmp_path, VALID)), env={"GITHUB_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["github"]["poll_interval"] == "1m"
    assert printed_secrets(result.stdout)["github.token"] == "<redacted> from $GITHUB_TOKEN"
    assert TOKEN not in result.stdout + result.stderr


def test_usage_errors_exit_2() -> None:
    """Unknown commands and missing arguments are usage errors (exit 2)."""
    assert run_cli("frobnicate").returncode == 2
    assert run_cli("serve").returncode == 2
    assert run_cli("check-config", "/nonexistent.yaml").returncode == 2


def test_serve_without_token_exits_2(tmp_path: Path) -> None:
    """A missing token is a config error naming the key, before anything starts."""
    result = run_cli("serve", "--config", str(_write(tmp_path, VALID)), env={"GITHUB_TOKEN": ""})
    assert result.returncode == 2
    assert "github.token_env" in result.stderr


@pytest.mark.parametrize(
    ("bound", "ok"),
    [("10m", True), ("7260", True), ("10.5s", False), ("10801", False), ("2d", False)],
)
def test_target_bounds_lie_on_the_histogram_grid(bound: str, ok: bool) -> None:
    """Targets and baselines become exact histogram buckets: whole seconds up to 2 h, whole
    minutes up to a day; anything else names the key."""
    target = {
        "repository": "acme/webapp",
        "workflow": "CI",
        "target": {"lower": "10m", "upper": "12m"},
    }
    data = {**VALID, "targets": [{**target, "baseline": {"lower": bound, "upper": "1d"}}]}
    if ok:
        assert validate_config(data).targets[0].baseline is not None
    else:
        with pytest.raises(ConfigError, match=r"targets\.0\.baseline\.lower"):
            validate_config(data)
