"""Composition root: builds the store, clients, pollers, scheduler, collector and HTTP server from a
config, and nothing else."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from exporter.collector import StoreCollector
from exporter.config import Config, ConfigError, GitHubConfig, RegistryConfig, parse_listen
from exporter.logging import SECRETS, get_logger
from exporter.scheduler import PollRunner, Scheduler, SourceJob
from exporter.server import HttpServer, Readiness, make_app
from exporter.sources.errors import AuthError
from exporter.sources.github.actions_cache import ActionsCacheStorage
from exporter.sources.github.auth import AppAuth, Auth, TokenAuth, read_private_key
from exporter.sources.github.client import GitHubClient, RateBudget
from exporter.sources.github.joblogs import JobLogs
from exporter.sources.github.junit import JUnitArtifacts
from exporter.sources.github.poller import Enricher, RepositoryPoller
from exporter.sources.registry import RegistryClient
from exporter.sources.registry_poller import RegistryPoller
from exporter.sources.retry import Backoff
from exporter.state import Store
from exporter.telemetry import Telemetry

log = get_logger(__name__)
USER_AGENT = "ci-pipeline-exporter"


def build_auth(github: GitHubConfig, environ: Mapping[str, str], http: httpx.Client) -> Auth:
    """Raises ConfigError naming the key when the secret is not available."""
    if github.app is not None:
        try:
            key = read_private_key(github.app.private_key_file)
        except AuthError as exc:
            raise ConfigError(f"github.app.private_key_file: {exc}") from None
        return AppAuth(github.app.app_id, github.app.installation_id, key, github.api_url, http)
    if github.token_file:
        try:
            token = Path(github.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"github.token_file: cannot read {github.token_file}: {exc.strerror}"
            ) from None
    else:
        token = environ.get(github.token_env, "").strip()
        if not token:
            raise ConfigError(
                f"github.token_env: environment variable {github.token_env} is not set"
            )
    SECRETS.add(token)
    return TokenAuth(token)


class App:
    def __init__(
        self,
        config: Config,
        *,
        environ: Mapping[str, str] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        config = config.sharded()
        self.config = config
        self.store = Store(config.state.path, config.limits.max_series_per_metric)
        self.registry = CollectorRegistry(auto_describe=False)
        self.telemetry = Telemetry(self.registry)
        self.registry.register(StoreCollector(self.store, config))
        self.jobs: list[SourceJob] = []
        self._registry_http: list[httpx.Client] = []
        self.pollers: list[RepositoryPoller] = []
        self.http: httpx.Client | None = None
        if config.github is not None and config.github.repositories:
            gh = config.github
            self.http = httpx.Client(
                timeout=httpx.Timeout(gh.timeout, connect=min(10.0, gh.timeout)),
                headers={"User-Agent": USER_AGENT},
                limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            )
            try:
                auth = build_auth(gh, environ, self.http)
            except ConfigError:
                self.close()
                raise
            self.budget = RateBudget(gh.rate_limit_reserve)
            client = GitHubClient(
                gh.api_url,
                auth,
                http=self.http,
                telemetry=self.telemetry,
                cache=self.store,
                budget=self.budget,
                max_retries=gh.max_retries,
                backoff=backoff or Backoff(base=gh.retry_backoff),
                secondary_wait=gh.secondary_rate_limit_wait,
            )
            self.github = client
            for repo in gh.repositories:
                extra = [t.branch for t in config.targets if t.repository == repo.name]
                targets = {
                    (t.workflow, t.branch): t.target.upper
                    for t in config.targets
                    if t.repository == repo.name
                }
                enrichers: list[Enricher] = [
                    JobLogs(repo, client, self.store, self.telemetry),
                    JUnitArtifacts(repo, client, self.store, self.telemetry),
                ]
                poller = RepositoryPoller(
                    repo,
                    gh,
                    client,
                    self.store,
                    self.telemetry,
                    extra_branches=extra,
                    targets=targets,
                    enrichers=enrichers,
                    cache_storage=ActionsCacheStorage(repo, client, self.store),
                )
                self.pollers.append(poller)
                self.jobs.append(
                    SourceJob(poller.source, poller.poll, gh.poll_interval, self.budget)
                )
        for registry in config.registries:
            self._add_registry(registry, environ, backoff)
        for job in self.jobs:
            self.telemetry.poll_interval.labels(job.source).set(job.interval)
        self.readiness = Readiness(job.source for job in self.jobs)
        self.runner = PollRunner(self.telemetry, self.readiness)
        self.scheduler: Scheduler | None = None
        self.server: HttpServer | None = None

    def _add_registry(
        self, registry: RegistryConfig, environ: Mapping[str, str], backoff: Backoff | None
    ) -> None:
        username = environ.get(registry.username_env, "") if registry.username_env else ""
        password = environ.get(registry.password_env, "") if registry.password_env else ""
        if registry.password_env and not password:
            raise ConfigError(
                f"registries: environment variable {registry.password_env} is not set"
            )
        SECRETS.add(password)
        http = httpx.Client(
            timeout=httpx.Timeout(registry.timeout, connect=min(10.0, registry.timeout)),
            headers={"User-Agent": USER_AGENT},
        )
        self._registry_http.append(http)
        client = RegistryClient(
            registry.url,
            http,
            username=username or None,
            password=password or None,
            telemetry=self.telemetry,
            max_retries=registry.max_retries,
            backoff=backoff or Backoff(base=0.5),
        )
        poller = RegistryPoller(registry, client, self.store, self.telemetry)
        self.jobs.append(SourceJob(poller.source, poller.poll, registry.poll_interval))

    def prune(self) -> None:
        if self.config.github is None:
            return
        gh = self.config.github
        # Older than anything a window can reach again, with a day of margin.
        before = time.time() - gh.lookback - gh.rerun_window - 86400
        removed = self.store.prune_observed(before)
        if removed:
            log.info("pruned observed ids", removed=removed)

    def poll_once(self) -> bool:
        """Every source once, sequentially; True when all succeeded."""
        results = [self.runner.run(job, force=True) for job in self.jobs]
        self.prune()
        return all(results)

    def start(self, listen: str | None = None) -> None:
        host, port = parse_listen(listen or self.config.listen)
        self.server = HttpServer(host, port, make_app(self.registry, self.readiness))
        self.server.start()
        self.scheduler = Scheduler(self.runner, self.jobs, max_workers=4)
        self.scheduler.start()
        log.info("serving", listen=self.server.listen, sources=len(self.jobs))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling (the poll in progress ends at its next run), finish the write in progress,
        close the store."""
        for poller in self.pollers:
            poller.stop()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + timeout
        for job in self.jobs:
            remaining = max(0.0, deadline - time.monotonic())
            if job.lock.acquire(timeout=remaining):
                job.lock.release()
        if self.server is not None:
            self.server.stop()
        self.close()

    def close(self) -> None:
        self.store.close()
        for client in [self.http, *self._registry_http]:
            if client is not None:
                client.close()
