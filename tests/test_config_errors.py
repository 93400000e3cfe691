"""What a user sees when the configuration is wrong, through the CLI: every problem on its own line,
values from the environment named by their variable, and files that YAML would accept but that
can't be what was meant (a key given twice, an empty file, a token sent over plain http)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import ConfigError, validate_config
from tests.helpers import run_cli

PREFIX = "ci-pipeline-exporter: config error: "
VALID: dict[str, Any] = {"github": {"repositories": [{"name": "acme/webapp"}]}}


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Exit 2, no traceback, every stderr line a config error; the lines without the prefix."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert all(line.startswith(PREFIX) for line in lines), lines
    return [line.removeprefix(PREFIX) for line in lines]


def test_every_validation_error_is_printed_one_line_each(tmp_path: Path) -> None:
    """Three mistakes give three lines (it used to be the first with "(and 2 more)"); the first
    line keeps the one-line format `<key>: <message>`."""
    data = {
        "github": {
            "poll_interval": "soon",
            "timeout": 0,
            "repositories": [{"name": "acme/webapp", "brnaches": ["main"]}],
        }
    }
    errors = _errors(run_cli("check-config", str(_write(tmp_path, data))))
    assert len(errors) == 3, errors
    assert errors[0].startswith("github.poll_interval: invalid duration 'soon'"), errors
    assert any(e.startswith("github.timeout: ") for e in errors), errors
    assert "github.repositories.0.brnaches: unknown key" in errors, errors
    assert not any("more" in e for e in errors), errors


def test_more_than_twenty_errors_end_with_a_count(tmp_path: Path) -> None:
    """25 bad repository names: the first 20 are printed, then one line counts the other 5."""
    data = {"github": {"repositories": [{"name": f"bad name {i}"} for i in range(25)]}}
    errors = _errors(run_cli("check-config", str(_write(tmp_path, data))))
    assert len(errors) == 21, errors
    assert errors[0].startswith("github.repositories.0.name: "), errors
    assert errors[19].startswith("github.repositories.19.name: "), errors
    assert errors[20] == "… and 5 more", errors


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "CIPE_GITHUB__POLL_INTERVAL",
            "abc",
            "github.poll_interval (from CIPE_GITHUB__POLL_INTERVAL): invalid duration 'abc'",
        ),
        (
            "CIPE_GITHUB__POLL_INTERVALL",
            "30s",
            "github.poll_intervall (from CIPE_GITHUB__POLL_INTERVALL): unknown key",
        ),
        (
            "CIPE_GITHUB__REPOSITORIES",
            '[{"name": "acme/x"',
            "github.repositories (from CIPE_GITHUB__REPOSITORIES): not valid JSON or YAML",
        ),
        (
            "CIPE_GITHUB__REPOSITORIES",
            '[{"nmae": "acme/x"}]',
            "github.repositories.0.name (from CIPE_GITHUB__REPOSITORIES): required key is missing",
        ),
        (
            "CIPE_GITHUB",
            '{"timeout": "fast"}',
            "github.timeout (from CIPE_GITHUB): invalid duration 'fast'",
        ),
    ],
)
def test_errors_in_values_from_the_environment_name_the_variable(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    """A value the file doesn't hold is found by its variable: the key and the variable."""
    errors = _errors(run_cli("check-config", str(_write(tmp_path, VALID)), env={variable: value}))
    assert errors[0].startswith(expected), errors


def test_errors_in_the_file_name_no_variable(tmp_path: Path) -> None:
    """With an unrelated variable set, a mistake in the file is reported without "(from …)"."""
    data = {"github": {"poll_interval": "abc", "repositories": [{"name": "acme/webapp"}]}}
    errors = _errors(
        run_cli("check-config", str(_write(tmp_path, data)), env={"CIPE_GITHUB__TIMEOUT": "5s"})
    )
    assert errors == ["github.poll_interval: invalid duration 'abc': use e.g. 90, 90s, 15m, 2h, 7d"]


@pytest.mark.parametrize(
    ("text", "key", "line", "first"),
    [
        (
            "github:\n  poll_interval: 30s\n  repositories: [{name: acme/webapp}]\n"
            "  poll_interval: 5m\n",
            "poll_interval",
            4,
            2,
        ),
        ("github:\n  repositories: [{name: acme/webapp}]\ngithub: {}\n", "github", 3, 1),
        (
            "github:\n  repositories:\n    - name: acme/webapp\n      branches: [main]\n"
            "      branches: [release]\n",
            "branches",
            5,
            4,
        ),
    ],
)
def test_a_key_given_twice_is_refused(
    tmp_path: Path, text: str, key: str, line: int, first: int
) -> None:
    """YAML would keep the last value silently; the file is refused naming the key and line."""
    path = _write(tmp_path, text)
    errors = _errors(run_cli("check-config", str(path)))
    assert errors == [f"{path}: duplicate key '{key}' at line {line} (first at line {first})"]


def test_a_key_given_twice_in_an_environment_value_is_refused(tmp_path: Path) -> None:
    """The same holds for a mapping given as YAML in a variable, which is named."""
    errors = _errors(
        run_cli(
            "check-config",
            str(_write(tmp_path, VALID)),
            env={"CIPE_GITHUB__REPOSITORIES": "[{name: acme/x, name: acme/y}]"},
        )
    )
    assert len(errors) == 1, errors
    assert errors[0].startswith("github.repositories (from CIPE_GITHUB__REPOSITORIES): "), errors
    assert "duplicate key 'name'" in errors[0], errors


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    """A key that overrides one merged in with `<<` is YAML's override, not a duplicate."""
    text = (
        "x-repo: &repo {name: acme/webapp, branches: [main]}\n"
        "github:\n  repositories:\n    - {<<: *repo, name: acme/api}\n"
    )
    path = _write(tmp_path, text)
    result = run_cli("check-config", str(path))
    # x-repo is an unknown key: refused for that, not as a duplicate.
    assert _errors(result) == ["x-repo: unknown key"]


@pytest.mark.parametrize("text", ["", "\n", "# all commented out\n# github: {}\n"])
def test_an_empty_file_is_refused(tmp_path: Path, text: str) -> None:
    """An empty (or all-comment) file used to run an exporter that polls nothing: one line."""
    path = _write(tmp_path, text)
    assert _errors(run_cli("check-config", str(path))) == [
        f"{path}: the file is empty (or only comments): nothing to do"
    ]


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://github.example/api/v3", False),
        ("http://10.0.0.5:8080", False),
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080/api/v3", True),
        ("http://[::1]:8080", True),
        ("https://github.example/api/v3", True),
    ],
)
def test_plain_http_api_url_only_for_loopback(tmp_path: Path, url: str, ok: bool) -> None:
    """The token would cross the network in clear text: plain http only for loopback, as for
    registries; the refusal never quotes the URL."""
    data = {"github": {"api_url": url, "repositories": [{"name": "acme/webapp"}]}}
    result = run_cli("check-config", str(_write(tmp_path, data)))
    if ok:
        assert result.returncode == 0, result.stderr
    else:
        errors = _errors(result)
        assert errors == [
            "github.api_url: plain http is allowed for a loopback api_url only (the token)"
        ]
        assert url not in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "http://cipe-{index}.svc:9470/{hook}",  # a field the forwarder can't fill
        "http://cipe-{index}.svc:9470/{}",
        "http://cipe-{index}.svc:9470/webhook{",
        "http://cipe-{index!x}.svc:9470/webhook",
        "http://cipe.svc:9470/webhook",  # no {index}
    ],
)
def test_forward_url_template_checked_at_load(tmp_path: Path, url: str) -> None:
    """A forward_url the forwarder could not format for every shard is one config error naming
    the key (it used to pass, then fail in the forwarder's thread for every event)."""
    data = {"github": {**VALID["github"], "webhooks": {"forward_url": url}}}
    errors = _errors(run_cli("check-config", str(_write(tmp_path, data))))
    assert len(errors) == 1, errors
    assert errors[0].startswith("github.webhooks.forward_url: "), errors


def test_a_repository_listed_twice_in_another_case_is_refused(tmp_path: Path) -> None:
    """GitHub's names ignore case, so `acme/WebApp` after `acme/webapp` is the same repository
    listed twice (webhooks match names ignoring case: they could not tell the two apart)."""
    data = {"github": {"repositories": [{"name": "acme/webapp"}, {"name": "acme/WebApp"}]}}
    errors = _errors(run_cli("check-config", str(_write(tmp_path, data))))
    assert len(errors) == 1, errors
    assert "repository acme/WebApp is listed twice" in errors[0], errors


def test_a_secret_written_into_the_config_says_where_it_goes() -> None:
    """`secret:`, `token:` or `password:` in the file is an unknown key whose message says where
    the value comes from instead — without echoing it."""
    repos = [{"name": "a/b"}]
    cases = {
        "github.token: unknown key (the token comes from token_env, token_file or app)": {
            "github": {"token": "notechoed", "repositories": repos}
        },
        "github.webhooks.secret: unknown key (the secret comes from secret_env or secret_file)": {
            "github": {"repositories": repos, "webhooks": {"secret": "notechoed"}}
        },
        "registries.0.password: unknown key (the password comes from password_env)": {
            "registries": [{"url": "https://r.example", "password": "notechoed", "images": []}]
        },
    }
    for expected, raw in cases.items():
        with pytest.raises(ConfigError) as raised:
            validate_config(raw)
        assert expected in str(raised.value)
        assert "notechoed" not in str(raised.value)
