"""Actions cache storage of a repository: usage and entries (`/actions/cache/usage`), and the cache
list (`/actions/caches`) to tell BuildKit's gha cache bytes from the rest. Conditional requests,
on its own, longer interval than the repository's poll; a failure is a counted skip, not the
poll's."""

from __future__ import annotations

from exporter import metrics as m
from exporter.config import RepositoryConfig
from exporter.logging import get_logger
from exporter.observations import replace_unit
from exporter.payloads.github import CacheEntry, CacheUsage, parse
from exporter.sources.errors import RateLimited, SourceError, Stopping
from exporter.sources.github.client import GitHubClient
from exporter.store import StateRecord, Store

log = get_logger(__name__)
BUILDKIT_PREFIXES = ("buildkit-blob-", "index-buildkit-")


class CachePoll(StateRecord):
    NAME = "actions_cache"
    cache_polled_at: float = 0.0


def is_buildkit_key(key: str) -> bool:
    return key.startswith(BUILDKIT_PREFIXES)


class ActionsCacheStorage:
    def __init__(self, repo: RepositoryConfig, client: GitHubClient, store: Store) -> None:
        self.repo = repo
        self.client = client
        self.store = store
        self.source = f"github:{repo.name}"

    def poll_if_due(self, now: float) -> None:
        settings = self.repo.actions_cache
        if not settings.enabled:
            return
        last = self.store.records.get(self.source, CachePoll)
        if now - last.cache_polled_at < settings.poll_interval:
            return
        # Success or not, the next try waits for the interval: a failing endpoint costs little.
        self.store.records.put(self.source, CachePoll(cache_polled_at=now))
        try:
            self.poll()
        except (RateLimited, Stopping):
            raise
        except SourceError as exc:
            self.client.skip(self.source, f"actions_cache_{exc.reason}")
            log.warning(
                "actions cache skipped", source=self.source, reason=exc.reason, detail=str(exc)
            )

    def poll(self) -> dict[str, float]:
        name = self.repo.name
        page = self.client.get_page(
            self.client.url(f"/repos/{name}/actions/cache/usage"), conditional=True
        )
        usage = parse(CacheUsage, page.data, "cache usage")
        kinds = {"buildkit": 0.0, "other": 0.0}
        for _, entries in self.client.paginate(
            f"/repos/{name}/actions/caches",
            {"per_page": 100},
            "actions_caches",
            conditional=True,
            source=self.source,
        ):
            for item in entries:
                entry = parse(CacheEntry, item, "cache entry")
                kinds["buildkit" if is_buildkit_key(entry.key) else "other"] += entry.size_in_bytes
        values: dict[m.MetricSpec, dict[tuple[str, ...], float]] = {
            m.CACHE_USAGE: {(name,): float(usage.active_caches_size_in_bytes)},
            m.CACHE_ENTRIES: {(name,): float(usage.active_caches_count)},
            m.CACHE_LIMIT: {(name,): float(self.repo.actions_cache.limit_bytes)},
            m.CACHE_KIND_BYTES: {(name, kind): v for kind, v in kinds.items()},
        }
        for spec, series in values.items():
            self.store.commit(replace_unit(self.source, spec, (name,), series.items()))
        return {
            "usage_bytes": float(usage.active_caches_size_in_bytes),
            **{f"{k}_bytes": v for k, v in kinds.items()},
        }
