"""Actions cache storage of a repository: usage and entries (`/actions/cache/usage`), and the cache
list (`/actions/caches`) to tell BuildKit's gha cache bytes from the rest. Conditional requests;
polled on its own, longer interval from the repository's poll."""

from __future__ import annotations

from exporter import metrics as m
from exporter.config import RepositoryConfig
from exporter.sources.errors import MalformedResponse
from exporter.sources.github.client import GitHubClient
from exporter.state import Store

BUILDKIT_PREFIXES = ("buildkit-blob-", "index-buildkit-")


def is_buildkit_key(key: object) -> bool:
    return isinstance(key, str) and key.startswith(BUILDKIT_PREFIXES)


class ActionsCacheStorage:
    def __init__(self, repo: RepositoryConfig, client: GitHubClient, store: Store) -> None:
        self.repo = repo
        self.client = client
        self.store = store

    def poll(self) -> dict[str, float]:
        name = self.repo.name
        usage = self.client.get_page(
            self.client.url(f"/repos/{name}/actions/cache/usage"), conditional=True
        ).data
        if not isinstance(usage, dict):
            raise MalformedResponse("cache usage is not an object")
        size, count = usage.get("active_caches_size_in_bytes"), usage.get("active_caches_count")
        if not isinstance(size, int) or not isinstance(count, int):
            raise MalformedResponse("cache usage lacks active_caches_size_in_bytes/count")
        kinds = {"buildkit": 0.0, "other": 0.0}
        for _, entries in self.client.paginate(
            f"/repos/{name}/actions/caches", {"per_page": 100}, "actions_caches", conditional=True
        ):
            for entry in entries:
                bytes_ = entry.get("size_in_bytes")
                if isinstance(bytes_, int):
                    kinds["buildkit" if is_buildkit_key(entry.get("key")) else "other"] += bytes_
        self.store.set_gauges(m.CACHE_USAGE, (name,), {(name,): float(size)})
        self.store.set_gauges(m.CACHE_ENTRIES, (name,), {(name,): float(count)})
        self.store.set_gauges(
            m.CACHE_LIMIT, (name,), {(name,): float(self.repo.actions_cache.limit_bytes)}
        )
        self.store.set_gauges(
            m.CACHE_KIND_BYTES, (name,), {(name, kind): v for kind, v in kinds.items()}
        )
        return {
            "usage_bytes": float(size),
            "entries": float(count),
            **{f"{k}_bytes": v for k, v in kinds.items()},
        }
