"""The typed configuration: YAML file, `CIPE_…` environment overrides, validation, redaction.

`load_config` returns a valid `Config` or raises `ConfigError` whose message names the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.timeutil import format_duration, parse_duration

ENV_PREFIX = "CIPE_"
# Variables with the prefix that are not configuration (test switches of the project itself).
NON_CONFIG_ENV = frozenset({"CIPE_REQUIRE_INTEGRATION"})
DEFAULT_PORT = 9469
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]

_REPO_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class ConfigError(Exception):
    """A configuration that can't be used; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateConfig(_Strict):
    path: str = "./state.db"
    # A damaged state file: moved aside and rebuilt from the lookback window (keeps a pod
    # useful), or refused with one line and exit 2.
    on_damage: Literal["rebuild", "refuse"] = "rebuild"


class AppAuthConfig(_Strict):
    app_id: int
    installation_id: int
    private_key_file: str


class LogsConfig(_Strict):
    jobs: list[str] = Field(
        default_factory=list, description="globs of job names whose logs are read"
    )
    # Logs are streamed; past this many bytes the rest is not read (counted as log_truncated).
    max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # Distinct (stage, instruction) label pairs per job; further ones fold into "other" (counted).
    max_instructions: int = Field(default=50, ge=1)


class ActionsCacheConfig(_Strict):
    enabled: bool = True
    poll_interval: Duration = 600.0
    limit_bytes: int = Field(default=10 * 1024**3, gt=0)


class JunitConfig(_Strict):
    artifacts: list[str] = Field(
        default_factory=list, description="globs of artifact names with JUnit XML"
    )
    suite_depth: int = Field(default=1, ge=1, le=10)
    # Beyond this many suites per workflow, new suites fold into "other" (counted).
    max_suites: int = Field(default=100, ge=1)
    max_download_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_uncompressed_bytes: int = Field(default=256 * 1024 * 1024, gt=0)


class RepositoryConfig(_Strict):
    name: str
    workflows: list[str] | None = None
    branches: list[str] = Field(default_factory=lambda: ["main", "master"])
    logs: LogsConfig = Field(default_factory=LogsConfig)
    junit: JunitConfig = Field(default_factory=JunitConfig)
    actions_cache: ActionsCacheConfig = Field(default_factory=ActionsCacheConfig)

    @field_validator("name")
    @classmethod
    def _owner_slash_name(cls, value: str) -> str:
        if not _REPO_NAME.match(value):
            raise ValueError(f"{value!r} is not owner/name")
        return value


class GitHubConfig(_Strict):
    api_url: str = "https://api.github.com"
    token_env: str = "GITHUB_TOKEN"
    token_file: str | None = None
    app: AppAuthConfig | None = None
    poll_interval: Duration = 60.0
    lookback: Duration = 86400.0
    # Re-runs keep the run's created_at, so the run list reaches this far back to see them.
    rerun_window: Duration = 6 * 3600.0
    timeout: Duration = 30.0
    max_retries: int = Field(default=3, ge=0, le=10)
    # Fraction of the rate limit kept in reserve: below it polling pauses until the reset.
    rate_limit_reserve: float = Field(default=0.05, ge=0, lt=1)
    # Wait after a secondary rate limit that carries no retry-after (GitHub: at least a minute).
    secondary_rate_limit_wait: Duration = 60.0
    # First retry delay after a 5xx or transport error; doubles per retry, with jitter.
    retry_backoff: Duration = 0.5
    workflow_refresh: Duration = 3600.0
    # A GitHub timestamp further in the future than this is malformed (it would poison the
    # latest-value gauges); allows for this machine's clock running behind.
    clock_skew: Duration = 300.0
    repositories: list[RepositoryConfig] = Field(default_factory=list)

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("poll_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be above 0")
        return value

    @model_validator(mode="after")
    def _unique_repositories(self) -> GitHubConfig:
        names = [r.name for r in self.repositories]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"repository {name} is listed twice")
        return self


class Bounds(_Strict):
    lower: Duration
    upper: Duration

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if self.lower > self.upper:
            raise ValueError("lower is above upper")
        return self


class TargetConfig(_Strict):
    repository: str
    workflow: str
    branch: str = "main"
    target: Bounds
    baseline: Bounds | None = None


class RunRef(_Strict):
    """The run whose head_sha fills `{head_sha}` / `{head_sha:7}` in tag templates."""

    repository: str
    workflow: str
    branch: str = "main"


class ImageConfig(_Strict):
    name: str
    tags: list[str] = Field(default_factory=lambda: ["latest"])
    set: str | None = None
    run: RunRef | None = None

    @model_validator(mode="after")
    def _templates_need_a_run(self) -> ImageConfig:
        if any("{" in tag for tag in self.tags) and self.run is None:
            raise ValueError(
                "tags with {head_sha} templates need run: {repository, workflow, branch}"
            )
        for tag in self.tags:
            stripped = re.sub(r"\{head_sha(?::\d+)?\}", "", tag)
            if "{" in stripped or "}" in stripped:
                raise ValueError(f"tag {tag!r}: only {{head_sha}} and {{head_sha:N}} are templates")
        return self


class RegistryConfig(_Strict):
    url: str
    username_env: str | None = None
    password_env: str | None = None
    poll_interval: Duration = 900.0
    timeout: Duration = 30.0
    max_retries: int = Field(default=3, ge=0, le=10)
    images: list[ImageConfig] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _https_or_loopback(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError("plain http is allowed for loopback registries only")
        return value.rstrip("/")

    @property
    def host(self) -> str:
        from urllib.parse import urlsplit

        return urlsplit(self.url).netloc


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ShardingConfig(_Strict):
    """N replicas split the work: each repository and image set belongs to one shard by a stable
    hash, so no series is exported twice."""

    total: int = Field(default=1, ge=1)
    index: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _index_in_range(self) -> ShardingConfig:
        if self.index >= self.total:
            raise ValueError(f"index {self.index} is not below total {self.total}")
        return self

    def owns(self, key: str) -> bool:
        import hashlib

        digest = hashlib.sha256(key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.total == self.index


class LimitsConfig(_Strict):
    # Per metric: new label sets beyond this fold into "other" and are counted.
    max_series_per_metric: int = Field(default=5000, ge=10)


class Config(_Strict):
    listen: str = DEFAULT_LISTEN
    state: StateConfig = Field(default_factory=StateConfig)
    github: GitHubConfig | None = None
    targets: list[TargetConfig] = Field(default_factory=list)
    registries: list[RegistryConfig] = Field(default_factory=list)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    sharding: ShardingConfig = Field(default_factory=ShardingConfig)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_listen(value)
        return value

    @model_validator(mode="after")
    def _registries_unique(self) -> Config:
        hosts = [r.host for r in self.registries]
        for host in hosts:
            if hosts.count(host) > 1:
                raise ValueError(f"registries: {host} is listed twice")
        return self

    @model_validator(mode="after")
    def _targets_name_repositories(self) -> Config:
        known = {r.name for r in self.github.repositories} if self.github else set()
        for index, target in enumerate(self.targets):
            if target.repository not in known:
                raise ValueError(
                    f"targets.{index}.repository: {target.repository} is not in github.repositories"
                )
        return self

    def sharded(self) -> Config:
        """This shard's part: its repositories, targets and image sets (an image without a set is
        its own set); registries left without images are dropped."""
        if self.sharding.total == 1:
            return self
        github = self.github
        if github is not None:
            github = github.model_copy(
                update={
                    "repositories": [
                        r for r in github.repositories if self.sharding.owns(f"repo:{r.name}")
                    ]
                }
            )
        mine = {r.name for r in github.repositories} if github else set()
        registries = []
        for registry in self.registries:
            images = [
                i
                for i in registry.images
                if self.sharding.owns(
                    f"set:{i.set}" if i.set else f"image:{registry.host}/{i.name}"
                )
            ]
            if images:
                registries.append(registry.model_copy(update={"images": images}))
        return self.model_copy(
            update={
                "github": github,
                "registries": registries,
                "targets": [t for t in self.targets if t.repository in mine],
            }
        )

    def repository(self, name: str) -> RepositoryConfig | None:
        if self.github is None:
            return None
        return next((r for r in self.github.repositories if r.name == name), None)


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (or `:PORT`, `[::1]:PORT`) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return (host.strip("[]") or "0.0.0.0", int(port))


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node: Any = tree
    for index, key in enumerate(path):
        last = index == len(path) - 1
        if isinstance(node, list):
            if not key.isdigit():
                raise ConfigError(f"{'.'.join(path)}: {key!r} is not a list index")
            position = int(key)
            while len(node) <= position:
                node.append({})
            if last:
                node[position] = value
            else:
                if not isinstance(node[position], dict | list):
                    node[position] = {}
                node = node[position]
            continue
        if last:
            node[key] = value
            return
        child = node.get(key)
        if not isinstance(child, dict | list):
            child = [] if path[index + 1].isdigit() else {}
            node[key] = child
        node = child


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """`CIPE_GITHUB__POLL_INTERVAL=30s` sets `github.poll_interval`; values are YAML scalars."""
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in NON_CONFIG_ENV:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if not path:
            continue
        try:
            value = yaml.safe_load(environ[name])
        except yaml.YAMLError:
            value = environ[name]
        _set_path(raw, path, value)
    return raw


def _describe(error: Mapping[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()))
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if location.startswith("__root__") or not location:
        return message
    return f"{location}: {message}"


def validate_config(raw: object) -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a mapping of keys")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more)" if more else ""
        raise ConfigError(_describe(first) + suffix) from None


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read YAML (when a path is given), apply `CIPE_…` overrides, validate."""
    environ = os.environ if environ is None else environ
    raw: object = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}: not valid YAML{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a mapping of keys")
    return validate_config(apply_env_overrides(raw, environ))


def effective_config(config: Config, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The config as it will be used, with where each secret comes from but never its value."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = config.model_dump(mode="json")
    secrets: dict[str, str] = {}
    if config.github is not None:
        gh = config.github
        if gh.app is not None:
            exists = Path(gh.app.private_key_file).is_file()
            secrets["github.app.private_key"] = (
                f"<redacted> from file {gh.app.private_key_file}" + ("" if exists else " (missing)")
            )
        elif gh.token_file:
            exists = Path(gh.token_file).is_file()
            secrets["github.token"] = f"<redacted> from file {gh.token_file}" + (
                "" if exists else " (missing)"
            )
        else:
            present = bool(environ.get(gh.token_env))
            secrets["github.token"] = f"<redacted> from ${gh.token_env}" + (
                "" if present else " (not set)"
            )
    for index, registry in enumerate(config.registries):
        for key in ("username_env", "password_env"):
            env_name = getattr(registry, key)
            if env_name:
                present = bool(environ.get(env_name))
                secrets[f"registries.{index}.{key.removesuffix('_env')}"] = (
                    f"<redacted> from ${env_name}" + ("" if present else " (not set)")
                )
    data["secrets"] = secrets
    return data
