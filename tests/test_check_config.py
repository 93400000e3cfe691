"""check-config as a user meets it: `--config` like every other command, output that loads as a
config again, and a missing secret warned about (exit 0: CI may validate without the secret) where
`serve` and `once` refuse to start, naming every missing variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.helpers import TOKEN, printed_secrets, run_cli

WARNING = "ci-pipeline-exporter: warning: "
CONFIG: dict[str, Any] = {
    "github": {"repositories": [{"name": "acme/webapp"}]},
    "registries": [
        {
            "url": "https://registry.example",
            "username_env": "TEST_REGISTRY_USER",
            "password_env": "TEST_REGISTRY_TOKEN",
            "images": [{"name": "acme/web"}],
        }
    ],
}
# The variables the config names, unset (run_cli adds to the test process' environment).
UNSET = {"GITHUB_TOKEN": "", "TEST_REGISTRY_USER": "", "TEST_REGISTRY_TOKEN": ""}


def _write(tmp_path: Path, data: dict[str, Any], name: str = "config.yaml") -> Path:
    data = {**data, "state": {"path": str(tmp_path / "state.db")}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_missing_secrets_are_warnings_in_check_config(tmp_path: Path) -> None:
    """Exit 0 (the structure is valid), "(not set)" in the printed block, and one warning line on
    stderr per missing secret, naming its key and variable and saying serve would refuse."""
    result = run_cli("check-config", str(_write(tmp_path, CONFIG)), env=UNSET)
    assert result.returncode == 0, result.stderr
    assert printed_secrets(result.stdout) == {
        "github.token": "<redacted> from $GITHUB_TOKEN (not set)",
        "registries.0.username": "<redacted> from $TEST_REGISTRY_USER (not set)",
        "registries.0.password": "<redacted> from $TEST_REGISTRY_TOKEN (not set)",
    }
    assert result.stderr.strip().splitlines() == [
        f"{WARNING}github.token_env: environment variable GITHUB_TOKEN is not set: "
        "serve would refuse to start",
        f"{WARNING}registries.0.username_env: environment variable TEST_REGISTRY_USER is not "
        "set: serve would refuse to start",
        f"{WARNING}registries.0.password_env: environment variable TEST_REGISTRY_TOKEN is not "
        "set: serve would refuse to start",
    ]
    present = {"GITHUB_TOKEN": TOKEN, "TEST_REGISTRY_USER": "u", "TEST_REGISTRY_TOKEN": "p" * 20}
    quiet = run_cli("check-config", str(_write(tmp_path, CONFIG)), env=present)
    assert quiet.returncode == 0, quiet.stderr
    assert WARNING not in quiet.stderr


def test_once_names_every_missing_registry_variable(tmp_path: Path) -> None:
    """With the token there but neither registry variable, `once` stops before anything starts
    (no state file) with one line per missing variable, keyed as in the file."""
    config = _write(tmp_path, CONFIG)
    result = run_cli("once", "--config", str(config), env={**UNSET, "GITHUB_TOKEN": TOKEN})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "ci-pipeline-exporter: config error: registries.0.username_env: "
        "environment variable TEST_REGISTRY_USER is not set",
        "ci-pipeline-exporter: config error: registries.0.password_env: "
        "environment variable TEST_REGISTRY_TOKEN is not set",
    ]
    assert not (tmp_path / "state.db").exists()


def test_check_config_output_loads_as_a_config(tmp_path: Path) -> None:
    """What check-config prints is a config: checked again it prints the same (the secrets block
    is YAML comments, not a `secrets:` key the loader would refuse)."""
    env = {"GITHUB_TOKEN": TOKEN, "TEST_REGISTRY_USER": "u", "TEST_REGISTRY_TOKEN": "p" * 20}
    first = run_cli("check-config", str(_write(tmp_path, CONFIG)), env=env)
    assert first.returncode == 0, first.stderr
    printed = tmp_path / "effective.yaml"
    printed.write_text(first.stdout)
    second = run_cli("check-config", str(printed), env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert "secrets" not in yaml.safe_load(first.stdout)


def test_check_config_takes_config_like_the_other_commands(tmp_path: Path) -> None:
    """`check-config --config FILE` is the positional FILE; both at once, or neither, is a usage
    error (exit 2)."""
    config = str(_write(tmp_path, CONFIG))
    env = {"GITHUB_TOKEN": TOKEN, "TEST_REGISTRY_USER": "u", "TEST_REGISTRY_TOKEN": "p" * 20}
    by_option = run_cli("check-config", "--config", config, env=env)
    assert by_option.returncode == 0, by_option.stderr
    assert by_option.stdout == run_cli("check-config", config, env=env).stdout
    assert run_cli("check-config", config, "--config", config).returncode == 2
    assert run_cli("check-config").returncode == 2
