"""The typed configuration: YAML file, `CIPE_…` environment overrides, validation, redaction.

`load_config` returns a valid `Config` or raises `ConfigError` whose message names the key. The file
is read within a size, nesting and alias budget (`exporter.safeyaml`); the environment is read by
pydantic-settings' source for the same fields and overrides the file key by key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from exporter import safeyaml
from exporter.timeutil import format_duration, parse_duration

ENV_PREFIX = "CIPE_"
ENV_NESTED_DELIMITER = "__"
DEFAULT_PORT = 9469
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"

# Finite, 0 to 365 days (see parse_duration).
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
# Intervals, timeouts and waits: zero would spin, time out at once or never back off.
PositiveDuration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(gt=0),
    PlainSerializer(format_duration, return_type=str),
]
MIB, GIB = 1024**2, 1024**3

_REPO_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def _first_duplicate(values: Iterable[str], key: Callable[[str], str] = str) -> str | None:
    """Linear, so a file with thousands of repositories validates in moments."""
    seen: set[str] = set()
    for value in values:
        if key(value) in seen:
            return value
        seen.add(key(value))
    return None


class ConfigError(Exception):
    """A configuration that can't be used; the message names the key. `lines` holds every
    problem found, the message first (the CLI prints them one per line)."""

    def __init__(self, message: str, *more: str) -> None:
        super().__init__(message)
        self.lines = (message, *more)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StateConfig(_Strict):
    path: str = "./state.db"
    # A damaged state file: moved aside and rebuilt from the lookback window (keeps a pod
    # useful), or refused with one line and exit 2.
    on_damage: Literal["rebuild", "refuse"] = "rebuild"


class AppAuthConfig(_Strict):
    app_id: int = Field(gt=0, lt=2**63)
    installation_id: int = Field(gt=0, lt=2**63)
    private_key_file: str


class LogsConfig(_Strict):
    jobs: list[str] = Field(
        default_factory=list, description="globs of job names whose logs are read"
    )
    # Logs are streamed; past this many bytes the rest is not read (counted as log_truncated).
    max_bytes: int = Field(default=64 * MIB, gt=0, le=4 * GIB)
    # Distinct (stage, instruction) label pairs per job; further ones fold into "other" (counted).
    max_instructions: int = Field(default=50, ge=1, le=10_000)


class ActionsCacheConfig(_Strict):
    enabled: bool = True
    # Minimum age before the next read, checked on each GitHub poll (never a timer of its own):
    # 0 reads it on every poll, a setting the e2e tests use.
    poll_interval: Duration = 600.0
    # Exported as a float: 1 PiB keeps it exact and far above any real cache limit.
    limit_bytes: int = Field(default=10 * GIB, gt=0, le=1024**5)


class JunitConfig(_Strict):
    artifacts: list[str] = Field(
        default_factory=list, description="globs of artifact names with JUnit XML"
    )
    suite_depth: int = Field(default=1, ge=1, le=10)
    # Beyond this many suites per workflow, new suites fold into "other" (counted).
    max_suites: int = Field(default=100, ge=1, le=10_000)
    # The zip is held in memory while read: the cap bounds the memory a poll takes.
    max_download_bytes: int = Field(default=64 * MIB, gt=0, le=GIB)
    max_uncompressed_bytes: int = Field(default=256 * MIB, gt=0, le=4 * GIB)
    # A case that failed and passed on the same head SHA within this window is flaky.
    flaky_window: PositiveDuration = 14 * 86400.0
    # Cases whose history is kept per repository for flaky detection (least recently seen go).
    max_cases: int = Field(default=20_000, ge=1, le=1_000_000)


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


class WebhooksConfig(_Strict):
    """GitHub's workflow_job and workflow_run webhooks: metrics within seconds of a job finishing,
    live queues; the poller becomes the reconciler."""

    # Its own listener: only this port is exposed to GitHub.
    listen: str = "0.0.0.0:9470"
    path: str = "/webhook"
    secret_env: str | None = "GITHUB_WEBHOOK_SECRET"
    secret_file: str | None = None
    max_body_bytes: int = Field(default=25 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    # With webhooks on, the poll interval of every repository: it finds what a webhook missed.
    reconcile_interval: PositiveDuration = 600.0
    # Sharded: where an event for another shard's repository is forwarded ({index} = its shard).
    forward_url: str | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in "?# "):
            raise ValueError(f"{value!r} is not a URL path such as /webhook")
        return value

    @field_validator("forward_url")
    @classmethod
    def _forward_template(cls, value: str | None) -> str | None:
        if value is not None:
            check_base_url(_format_index(value), "forwarded events are signed")
        return value


def _format_index(template: str) -> str:
    """The forward_url for shard 0. {index} must be its only placeholder: the forwarder formats it
    for every event, and any other field would fail there, after GitHub got its answer."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError:
        raise ValueError("a { or } without its pair (write {{ or }} for a literal brace)") from None
    if any(field != "index" for field in fields):
        raise ValueError("{index} is the only placeholder allowed (write {{ or }} for a brace)")
    if "index" not in fields:
        raise ValueError("forward_url needs {index}, the owning shard's number")
    try:
        return template.format(index=0)
    except (ValueError, KeyError, IndexError):
        raise ValueError("{index} has a conversion or format that a number can't take") from None


class RunnersConfig(_Strict):
    """Self-hosted runners of an organisation or a repository: cicd_worker_count by group and
    state. The token needs the runner read permission (Self-hosted runners: read)."""

    org: str | None = None
    repository: str | None = None
    poll_interval: PositiveDuration = 60.0

    @model_validator(mode="after")
    def _one_scope(self) -> RunnersConfig:
        if (self.org is None) == (self.repository is None):
            raise ValueError("give exactly one of org or repository")
        if self.repository is not None and not _REPO_NAME.match(self.repository):
            raise ValueError(f"{self.repository!r} is not owner/name")
        if self.org is not None and not re.match(r"^[A-Za-z0-9_.-]+$", self.org):
            raise ValueError(f"{self.org!r} is not an organisation name")
        return self

    @property
    def scope(self) -> str:
        return f"org/{self.org}" if self.org else f"repo/{self.repository}"


class GitHubConfig(_Strict):
    api_url: str = "https://api.github.com"
    token_env: str = "GITHUB_TOKEN"
    token_file: str | None = None
    app: AppAuthConfig | None = None
    poll_interval: PositiveDuration = 60.0
    lookback: Duration = 86400.0
    # Re-runs keep the run's created_at, so the run list reaches this far back to see them.
    rerun_window: Duration = 6 * 3600.0
    timeout: PositiveDuration = 30.0
    max_retries: int = Field(default=3, ge=0, le=10)
    # Fraction of the rate limit kept in reserve: below it polling pauses until the reset.
    rate_limit_reserve: float = Field(default=0.05, ge=0, lt=1)
    # Wait after a secondary rate limit that carries no retry-after (GitHub: at least a minute).
    secondary_rate_limit_wait: PositiveDuration = 60.0
    # First retry delay after a 5xx or transport error; doubles per retry, with jitter.
    retry_backoff: PositiveDuration = 0.5
    # 0 re-reads the workflow file on every poll that needs it.
    workflow_refresh: Duration = 3600.0
    # A GitHub timestamp further in the future than this is malformed (it would poison the
    # latest-value gauges); allows for this machine's clock running behind.
    clock_skew: Duration = 300.0
    repositories: list[RepositoryConfig] = Field(default_factory=list)
    webhooks: WebhooksConfig | None = None
    runners: list[RunnersConfig] = Field(default_factory=list)

    @property
    def repository_interval(self) -> float:
        """How often each repository is polled: the reconcile interval when webhooks are on."""
        return self.webhooks.reconcile_interval if self.webhooks else self.poll_interval

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        hostname = check_base_url(value, "the token comes from token_env, token_file or app")
        # The token would cross the network in clear text (as for registries).
        if value.startswith("http:") and not is_loopback(hostname):
            raise ValueError("plain http is allowed for a loopback api_url only (the token)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _unique_repositories(self) -> GitHubConfig:
        # GitHub's names are case-insensitive: acme/WebApp and acme/webapp are one repository.
        twice = _first_duplicate((r.name for r in self.repositories), str.casefold)
        if twice is not None:
            raise ValueError(f"repository {twice} is listed twice (names ignore case)")
        return self


def _on_the_grid(value: float) -> float:
    """Target bounds become histogram buckets rendered exactly from the stored layout: whole
    seconds up to 2 h, whole minutes up to a day."""
    if value <= 7200 and value != int(value):
        raise ValueError(f"{value}s: use whole seconds")
    if value > 7200 and (value % 60 or value > 86400):
        raise ValueError(f"{value}s: above 2h use whole minutes, at most 1d")
    return value


GridDuration = Annotated[Duration, AfterValidator(_on_the_grid)]


class Bounds(_Strict):
    lower: GridDuration
    upper: GridDuration

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
    poll_interval: PositiveDuration = 900.0
    timeout: PositiveDuration = 30.0
    max_retries: int = Field(default=3, ge=0, le=10)
    images: list[ImageConfig] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _https_or_loopback(cls, value: str) -> str:
        hostname = check_base_url(value, "credentials come from username_env and password_env")
        if value.startswith("http:") and not is_loopback(hostname):
            raise ValueError("plain http is allowed for loopback registries only")
        return value.rstrip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc


def check_base_url(value: str, credentials_hint: str) -> str:
    """An http(s) base URL with a host and no user:password, query or fragment; returns the host.
    Messages never quote the value: a refused URL may hold a password."""
    parts = urlsplit(value)
    if "@" in parts.netloc or (parts.scheme not in ("http", "https") and "@" in value):
        raise ValueError(f"credentials in the URL are not allowed: {credentials_hint}")
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", value):
        raise ValueError("not an http(s) URL: use http(s)://HOST[:PORT][/PATH]")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ValueError(f"a query or fragment is not allowed in the URL: {credentials_hint}")
    try:
        port = parts.port
    except ValueError:  # its message quotes the port text
        port = 0
    if port == 0:
        raise ValueError("the port is not a number from 1 to 65535")
    return parts.hostname


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ShardingConfig(_Strict):
    """N replicas split the work: each repository and image set belongs to one shard by a stable
    hash, so no series is exported twice."""

    total: int = Field(default=1, ge=1, le=1000)
    index: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _index_in_range(self) -> ShardingConfig:
        if self.index >= self.total:
            raise ValueError(f"index {self.index} is not below total {self.total}")
        return self

    def owns(self, key: str) -> bool:
        return self.shard_of(key) == self.index

    def shard_of(self, key: str) -> int:
        digest = hashlib.sha256(key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.total


class LimitsConfig(_Strict):
    # Per metric: new label sets beyond this fold into "other" and are counted.
    max_series_per_metric: int = Field(default=50_000, ge=10, le=10_000_000)
    # A label set not updated for this long is dropped (a renamed job, a deleted branch).
    series_ttl: PositiveDuration = 14 * 86400.0
    # Distinct runner label sets (runs-on) per repository; further ones fold into "other".
    max_runner_label_sets: int = Field(default=10, ge=1, le=1000)
    # Workflow names per repository beyond those configured (`workflows`, targets); further
    # names fold into "other" (logged and counted once each).
    max_workflows: int = Field(default=50, ge=1, le=1000)


class MetricsConfig(_Strict):
    # Job names (globs) whose steps also get a histogram (percentiles); every step has its
    # average (sum and count) and latest value anyway.
    step_histograms: list[str] = Field(default_factory=list)


class Config(_Strict):
    listen: str = DEFAULT_LISTEN
    state: StateConfig = Field(default_factory=StateConfig)
    github: GitHubConfig | None = None
    targets: list[TargetConfig] = Field(default_factory=list)
    registries: list[RegistryConfig] = Field(default_factory=list)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    sharding: ShardingConfig = Field(default_factory=ShardingConfig)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_listen(value)
        return value

    @model_validator(mode="after")
    def _registries_unique(self) -> Config:
        twice = _first_duplicate(r.host for r in self.registries)
        if twice is not None:
            raise ValueError(f"registries: {twice} is listed twice")
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
                    ],
                    "runners": [
                        r for r in github.runners if self.sharding.owns(f"runners:{r.scope}")
                    ],
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


class _EnvironmentFields(BaseSettings, Config):
    """Config's fields as pydantic-settings' environment source sees them; never instantiated."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER, case_sensitive=False
    )


class EnvironmentSource(EnvSettingsSource):
    """`CIPE_GITHUB__POLL_INTERVAL=30s` → {"github": {"poll_interval": "30s"}}.

    Only variables that name a config key are read: `CIPE_CLI_…`, `CIPE_REQUIRE_INTEGRATION` and
    the like are not configuration. A list or mapping is given whole, as JSON or YAML, read within
    the same budget as the file; an item can't be set by index (see `_refuse_list_indexes`)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(_EnvironmentFields)
        self.environ = environ
        # The source reads os.environ by default; this mapping replaces it (tests, embedding).
        self.env_vars = {name.lower(): value for name, value in environ.items()}

    def __call__(self) -> dict[str, Any]:
        _refuse_list_indexes(self.environ)
        return super().__call__()

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        try:
            return safeyaml.load(value)
        except (safeyaml.YamlBudgetError, safeyaml.DuplicateKeyError) as exc:
            raise ConfigError(f"{self._origin(field_name, value)}: {exc}") from None
        except yaml.YAMLError:
            raise ConfigError(
                f"{self._origin(field_name, value)}: not valid JSON or YAML"
            ) from None

    def _origin(self, field_name: str, value: Any) -> str:
        """`github.repositories (from CIPE_GITHUB__REPOSITORIES)`: the key and the variable that
        holds `value` (the source passes only the last part of the key)."""
        ends = (ENV_PREFIX + field_name.upper(), (ENV_NESTED_DELIMITER + field_name).upper())
        for name, raw in self.environ.items():
            upper = name.upper()
            if raw == value and upper.startswith(ENV_PREFIX) and upper.endswith(ends):
                return f"{_env_key(name)} (from {name})"
        return f"{field_name} (from the environment)"


def _env_key(name: str) -> str:
    """CIPE_GITHUB__POLL_INTERVAL → github.poll_interval."""
    return ".".join(name[len(ENV_PREFIX) :].lower().split(ENV_NESTED_DELIMITER))


class EnvironmentOrigin:
    """Which `CIPE_…` variable a value at a config location came from, if any: errors about it
    name the variable, since the file does not hold the value."""

    def __init__(self, environ: Mapping[str, str], overrides: Mapping[str, Any]) -> None:
        self.overrides = overrides
        self.variables = {
            tuple(_env_key(name).split(".")): name
            for name in environ
            if name.upper().startswith(ENV_PREFIX)
        }

    def variable(self, location: tuple[str, ...]) -> str | None:
        node: Any = self.overrides
        for depth, part in enumerate(location):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
            if not isinstance(node, Mapping):
                # A value (or a whole list) the environment gave: the longest variable that
                # names this key or a section above it.
                for end in range(depth + 1, 0, -1):
                    name = self.variables.get(location[:end])
                    if name is not None:
                        return name
                return None
        return None


def _refuse_list_indexes(environ: Mapping[str, str]) -> None:
    """`CIPE_GITHUB__REPOSITORIES__0__NAME` is refused by name: the item can't be addressed, and the
    old overlay padded the list up to the index (10⁸ items took 3.9 GB)."""
    for name in environ:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split(ENV_NESTED_DELIMITER)
        if parts[0].lower() not in Config.model_fields:
            continue
        for position, part in enumerate(parts[1:], start=1):
            if part.isdigit():
                whole = ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts[:position])
                raise ConfigError(
                    f"{name}: a list item can't be set by index; "
                    f"give the whole list in {whole.upper()} as JSON or YAML"
                )


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` wins key by key; mappings merge, anything else (lists too) is replaced whole."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Secrets never sit in the config file: where a key looks like one, say where it goes instead.
_SECRET_HINTS = {
    "secret": " (the secret comes from secret_env or secret_file)",
    "token": " (the token comes from token_env, token_file or app)",
    "password": " (the password comes from password_env)",
}


def _describe(error: Mapping[str, Any], origin: EnvironmentOrigin | None = None) -> str:
    loc = tuple(str(part) for part in error.get("loc", ()))
    location = ".".join(loc)
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        message = "unknown key" + _SECRET_HINTS.get(loc[-1], "")
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if location.startswith("__root__") or not location:
        return message
    variable = origin.variable(loc) if origin is not None else None
    if variable is not None:
        location += f" (from {variable})"
    return f"{location}: {message}"


def validate_config(raw: object, origin: EnvironmentOrigin | None = None) -> Config:
    """A valid Config, or ConfigError with every problem found, one line each."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a mapping of keys")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(*(_describe(error, origin) for error in exc.errors())) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The YAML file as a mapping, within safeyaml's size, nesting and alias budget."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(safeyaml.MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        raw = safeyaml.load(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except (safeyaml.YamlBudgetError, safeyaml.DuplicateKeyError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if raw is None:
        # Most likely the wrong file, or one emptied by accident: nothing would be polled.
        raise ConfigError(f"{path}: the file is empty (or only comments): nothing to do")
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a mapping of keys")
    return raw


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """The YAML file (when a path is given) with `CIPE_…` variables over it, validated."""
    raw = read_config_file(path) if path is not None else {}
    environ = os.environ if environ is None else environ
    overrides = EnvironmentSource(environ)()
    return validate_config(_merge(raw, overrides), EnvironmentOrigin(environ, overrides))


@dataclass(frozen=True)
class Secret:
    """Where one secret comes from; never its value."""

    name: str  # as check-config shows it: github.token
    setting: str  # the key that names its source: github.token_env
    source: str  # the poll source that needs it: github, registry:<host>
    env: str | None = None
    file: str | None = None
    present: bool = False

    @property
    def origin(self) -> str:
        if self.env is not None:
            return f"<redacted> from ${self.env}" + ("" if self.present else " (not set)")
        return f"<redacted> from file {self.file}" + ("" if self.present else " (missing)")

    @property
    def problem(self) -> str:
        """Why serve would refuse to start without it (ConfigError's wording)."""
        if self.env is not None:
            return f"{self.setting}: environment variable {self.env} is not set"
        return f"{self.setting}: no file at {self.file}"


def read_secret(
    prefix: str, stem: str, file: str | None, env: str, environ: Mapping[str, str]
) -> str:
    """A secret's value: from `<prefix>.<stem>_file` when that is set, else from the variable
    `<prefix>.<stem>_env` names; ConfigError naming the key when it can't be had."""
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{prefix}.{stem}_file: cannot read {file}: {exc.strerror}") from None
    value = environ.get(env, "").strip()
    if not value:
        raise ConfigError(f"{prefix}.{stem}_env: environment variable {env} is not set")
    return value


def _env_secret(
    name: str, setting: str, source: str, var: str, environ: Mapping[str, str]
) -> Secret:
    return Secret(name, setting, source, env=var, present=bool(environ.get(var, "").strip()))


def _file_secret(name: str, setting: str, source: str, path: str) -> Secret:
    return Secret(name, setting, source, file=path, present=Path(path).is_file())


def secrets(config: Config, environ: Mapping[str, str] | None = None) -> list[Secret]:
    """Every secret the config names, with whether it is there."""
    environ = os.environ if environ is None else environ
    found: list[Secret] = []
    gh = config.github
    if gh is not None:
        if gh.app is not None:
            found.append(
                _file_secret(
                    "github.app.private_key",
                    "github.app.private_key_file",
                    "github",
                    gh.app.private_key_file,
                )
            )
        elif gh.token_file:
            found.append(_file_secret("github.token", "github.token_file", "github", gh.token_file))
        else:
            found.append(
                _env_secret("github.token", "github.token_env", "github", gh.token_env, environ)
            )
        hooks = gh.webhooks
        if hooks is not None and hooks.secret_file:
            name, setting = "github.webhooks.secret", "github.webhooks.secret_file"
            found.append(_file_secret(name, setting, "github", hooks.secret_file))
        elif hooks is not None and hooks.secret_env:
            name, setting = "github.webhooks.secret", "github.webhooks.secret_env"
            found.append(_env_secret(name, setting, "github", hooks.secret_env, environ))
    for index, registry in enumerate(config.registries):
        source = f"registry:{registry.host}"
        for key in ("username_env", "password_env"):
            var = getattr(registry, key)
            if var:
                name = f"registries.{index}.{key.removesuffix('_env')}"
                found.append(_env_secret(name, f"registries.{index}.{key}", source, var, environ))
    return found


def effective_config(config: Config) -> dict[str, Any]:
    """The config as it will be used (secrets are named by `secrets`, never printed)."""
    data: dict[str, Any] = config.model_dump(mode="json")
    return data
