"""Composition root: builds the store, clients, pollers, scheduler, collector and HTTP server from a
config, and nothing else."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping

import httpx
from prometheus_client import CollectorRegistry

from exporter import metrics as m
from exporter.config import (
    Config,
    ConfigError,
    GitHubConfig,
    RegistryConfig,
    RepositoryConfig,
    parse_listen,
    read_secret,
    secrets,
)
from exporter.exposition import Exposition
from exporter.logging import SECRETS, get_logger
from exporter.observations import Labels, RepositoryPolicy
from exporter.report import ReportPage
from exporter.scheduler import PollRunner, Scheduler, SourceJob
from exporter.server import HttpServer, Readiness, make_app
from exporter.sources.errors import AuthError
from exporter.sources.github.actions_cache import ActionsCacheStorage
from exporter.sources.github.auth import AppAuth, Auth, TokenAuth, read_private_key
from exporter.sources.github.client import GitHubClient
from exporter.sources.github.enrichers import Enricher, JobLogEnricher, JUnitEnricher
from exporter.sources.github.poller import RepositoryPoller
from exporter.sources.github.ratelimit import RateBudget
from exporter.sources.github.runners import RunnersPoller
from exporter.sources.http import RetryPolicy, make_client
from exporter.sources.registry.client import RegistryClient
from exporter.sources.registry.poller import RegistryPoller
from exporter.store import Store
from exporter.telemetry import Telemetry
from exporter.webhooks.wiring import Webhooks

log = get_logger(__name__)
MAINTENANCE_INTERVAL = 3600.0


def build_auth(github: GitHubConfig, environ: Mapping[str, str], http: httpx.Client) -> Auth:
    """Raises ConfigError naming the key when the secret is not available."""
    if github.app is not None:
        try:
            key = read_private_key(github.app.private_key_file)
        except AuthError as exc:
            raise ConfigError(f"github.app.private_key_file: {exc}") from None
        return AppAuth(
            github.app.app_id, github.app.installation_id, key, github.api_url, http=http
        )
    token = read_secret("github", "token", github.token_file, github.token_env, environ)
    SECRETS.add(token)
    return TokenAuth(token)


def policy_for(config: Config, repo: RepositoryConfig) -> RepositoryPolicy:
    targets = [t for t in config.targets if t.repository == repo.name]
    return RepositoryPolicy(
        repository=repo.name,
        branches=frozenset(repo.branches) | {t.branch for t in targets},
        targets={(t.workflow, t.branch): t.target.upper for t in targets},
        log_jobs=tuple(repo.logs.jobs),
        junit_artifacts=tuple(repo.junit.artifacts),
        step_histograms=tuple(config.metrics.step_histograms),
        max_instructions=repo.logs.max_instructions,
        max_suites=repo.junit.max_suites,
        flaky_window=repo.junit.flaky_window,
        max_cases=repo.junit.max_cases,
        max_runner_label_sets=config.limits.max_runner_label_sets,
        max_workflows=config.limits.max_workflows,
        series_ttl=config.limits.series_ttl,
        named_workflows=frozenset(
            [
                *(repo.workflows or ()),
                *(t.workflow for t in targets),
                *(
                    image.run.workflow
                    for registry in config.registries
                    for image in registry.images
                    if image.run is not None and image.run.repository == repo.name
                ),
            ]
        ),
    )


def source_keeper(config: Config) -> Callable[[str], bool]:
    """Whether a source's stored state (records, pending tasks, observed ids) belongs to a
    repository or registry this exporter (shard) still polls; other kinds of source are kept."""
    repos = {r.name for r in config.github.repositories} if config.github else set()
    owned = {f"github:{name}" for name in repos} | {f"registry:{r.host}" for r in config.registries}

    def keep(source: str) -> bool:
        kind = source.split(":", 1)[0]
        return kind not in ("github", "registry") or source in owned

    return keep


def keeper(config: Config) -> Callable[[str, Labels], bool]:
    """Whether a stored series belongs to a source this exporter (shard) still has."""
    owned = {
        "repository": {r.name for r in config.github.repositories} if config.github else set(),
        "registry": {r.host for r in config.registries},
        "set": {i.set for r in config.registries for i in r.images if i.set},
        "scope": {r.scope for r in config.github.runners} if config.github else set(),
    }
    index = {spec.name: spec.labels for spec in m.ALL_METRICS}

    def keep(metric: str, labels: Labels) -> bool:
        # The first label names the source a series comes from.
        first = index[metric][0] if index[metric] else ""
        return first not in owned or labels[0] in owned[first]

    return keep


def _require_secrets(full: Config, mine: Config, environ: Mapping[str, str]) -> None:
    """Every missing secret of the sources this shard polls, in one ConfigError (keys numbered as
    in the file), before anything is opened."""
    sources = {f"registry:{r.host}" for r in mine.registries}
    if mine.github is not None and (mine.github.repositories or mine.github.runners):
        sources.add("github")
    missing = [s.problem for s in secrets(full, environ) if s.source in sources and not s.present]
    if missing:
        raise ConfigError(*missing)


class App:
    def __init__(self, config: Config, *, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        # Every shard's repositories (a webhook for another shard's is forwarded to it).
        self.full_config = config
        config = config.sharded()
        self.config = config
        _require_secrets(self.full_config, config, environ)
        self.stopping = threading.Event()
        self.store = Store(
            config.state.path, config.limits.max_series_per_metric, on_damage=config.state.on_damage
        )
        self.clients: list[httpx.Client] = []
        try:
            self._build(config, environ)
        except BaseException:
            self.close()
            raise

    def _build(self, config: Config, environ: Mapping[str, str]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.telemetry = Telemetry(self.registry)
        if self.store.db.rebuilt:
            self.telemetry.state_rebuilds.inc()
        removed = self.store.remove_series(keeper(config))
        if removed:
            log.info("series of sources no longer configured removed", metrics=removed)
        repositories = {r.name for r in config.github.repositories} if config.github else set()
        if self.store.cases.remove_repositories(repositories):
            log.info("flaky-test histories of repositories no longer configured removed")
        forgotten = self.store.forget_sources(source_keeper(config))
        if forgotten:
            log.info("state of sources no longer configured removed", sources=forgotten)
        self.exposition = Exposition(self.store, config, self.registry)
        self.jobs: list[SourceJob] = []
        self.pollers: list[RepositoryPoller] = []
        self.webhooks: Webhooks | None = None
        if config.github is not None and (config.github.repositories or config.github.runners):
            self._add_github(config, config.github, environ)
        if config.github is not None and config.github.webhooks is not None:
            # Even a shard that owns nothing listens: the chart's webhook Service sends deliveries
            # to every replica, and this one forwards them to their owners.
            handlers = {poller.repo.name: poller for poller in self.pollers}
            self.webhooks = Webhooks(
                self.full_config, config.github.webhooks, environ, handlers, self.telemetry
            )
        for registry in config.registries:
            self._add_registry(registry, environ)
        for job in self.jobs:
            self.telemetry.poll_interval.labels(job.source).set(job.interval)
        self.readiness = Readiness(job.source for job in self.jobs)
        self.runner = PollRunner(self.telemetry, self.readiness)
        self.scheduler: Scheduler | None = None
        self.server: HttpServer | None = None

    def _add_github(self, config: Config, gh: GitHubConfig, environ: Mapping[str, str]) -> None:
        http = make_client(gh.timeout)
        self.clients.append(http)
        auth = build_auth(gh, environ, http)
        self.budget = RateBudget(gh.rate_limit_reserve)
        client = GitHubClient(
            gh.api_url,
            auth,
            http=http,
            timeout=gh.timeout,
            telemetry=self.telemetry,
            cache=self.store.http_cache,
            budget=self.budget,
            retry=RetryPolicy(gh.max_retries, gh.retry_backoff),
            secondary_wait=gh.secondary_rate_limit_wait,
            stop=self.stopping,
        )
        for repo in gh.repositories:
            policy = policy_for(config, repo)
            enrichers: list[Enricher] = [
                JobLogEnricher(policy, client, repo.logs),
                JUnitEnricher(policy, client, self.store, repo.junit, gh.clock_skew),
            ]
            poller = RepositoryPoller(
                repo,
                gh,
                client,
                self.store,
                policy,
                enrichers=enrichers,
                cache_storage=ActionsCacheStorage(repo, client, self.store),
                stop=self.stopping,
            )
            self.pollers.append(poller)
            interval = gh.repository_interval
            self.jobs.append(SourceJob(poller.source, poller.poll, interval, self.budget))
        for runners in gh.runners:
            pool = RunnersPoller(runners, client, self.store)
            self.jobs.append(SourceJob(pool.source, pool.poll, runners.poll_interval, self.budget))

    def _add_registry(self, registry: RegistryConfig, environ: Mapping[str, str]) -> None:
        username = environ.get(registry.username_env, "") if registry.username_env else ""
        password = environ.get(registry.password_env, "") if registry.password_env else ""
        SECRETS.add(password)  # present: checked by _require_secrets
        http = make_client(registry.timeout)
        self.clients.append(http)
        client = RegistryClient(
            registry.url,
            http,
            username=username or None,
            password=password or None,
            telemetry=self.telemetry,
            retry=RetryPolicy(registry.max_retries, 0.5),
            timeout=registry.timeout,
        )
        poller = RegistryPoller(registry, client, self.store, self.telemetry)
        self.jobs.append(SourceJob(poller.source, poller.poll, registry.poll_interval))

    def maintain(self) -> None:
        """Forget observed ids and cached responses older than any window reaches again, and
        drop series not updated for limits.series_ttl."""
        now = time.time()
        expired = self.store.expire(now - self.config.limits.series_ttl)
        if expired:
            log.info("stale series expired", metrics=expired)
        if self.config.github is None:
            return
        gh = self.config.github
        # Ids are stamped when observed; a run is listed again at most lookback + rerun_window
        # after it was created, so a day of margin beyond that is safe.
        removed = self.store.prune(now - gh.lookback - gh.rerun_window - 86400)
        if removed:
            log.info("pruned observed ids", removed=removed)

    def poll_once(self) -> bool:
        """Every source once, sequentially; True when all succeeded."""
        results = [self.runner.run(job, force=True) for job in self.jobs]
        self.maintain()
        return all(results)

    def start(self, listen: str | None = None) -> None:
        host, port = parse_listen(listen or self.config.listen)
        report = ReportPage(self.store, self.config).wsgi
        self.server = HttpServer(host, port, make_app(self.exposition.wsgi, self.readiness, report))
        self.server.start()
        if self.webhooks is not None:
            self.webhooks.start()
        self.scheduler = Scheduler(self.runner, self.jobs, max_workers=4)
        self.scheduler.add_maintenance(self.maintain, MAINTENANCE_INTERVAL)
        self.scheduler.start()
        log.info("serving", listen=self.server.listen, sources=len(self.jobs))

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop polling (requests in flight end, no new ones start), finish the write in progress,
        close the store. True when every poll ended within `timeout`."""
        self.stopping.set()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + timeout
        ended = True
        for job in self.jobs:
            if job.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                job.lock.release()
            else:
                ended = False
        if self.server is not None:
            self.server.stop()
        if self.webhooks is not None:
            self.webhooks.stop()
        self.close()
        return ended

    def close(self) -> None:
        self.store.close()
        for client in self.clients:
            client.close()
