"""One registry's poll: each configured image tag (templates filled from the latest successful run)
→ per-platform sizes; an unchanged tag costs one HEAD; sets' total and unique bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from exporter import metrics as m
from exporter.analysis.images import PlatformImage, set_sizes
from exporter.config import ImageConfig, RegistryConfig
from exporter.logging import get_logger
from exporter.sources.errors import NotFound, SourceError
from exporter.sources.registry import RegistryClient
from exporter.state import Store
from exporter.telemetry import Telemetry

log = get_logger(__name__)
_TEMPLATE = re.compile(r"\{head_sha(?::(\d+))?\}")


@dataclass
class RegistryPollResult:
    tags: int = 0
    unchanged: int = 0
    fetched: int = 0
    failed: int = 0


def latest_success_key(workflow: str, branch: str) -> str:
    return f"{workflow}|{branch}"


class RegistryPoller:
    def __init__(
        self,
        config: RegistryConfig,
        client: RegistryClient,
        store: Store,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.store = store
        self.telemetry = telemetry
        self.host = config.host
        self.source = f"registry:{self.host}"

    def resolve(self, image: ImageConfig, tag: str) -> str | None:
        """The tag to read: templates filled from the latest successful run, None when unknown."""
        if "{" not in tag or image.run is None:
            return tag
        state = self.store.get_source_state(f"github:{image.run.repository}")
        latest = state.get("latest_success", {}).get(
            latest_success_key(image.run.workflow, image.run.branch)
        )
        if not latest:
            return None
        sha = str(latest["head_sha"])
        return _TEMPLATE.sub(lambda mt: sha[: int(mt.group(1))] if mt.group(1) else sha, tag)

    def poll(self) -> RegistryPollResult:
        result = RegistryPollResult()
        state = self.store.get_source_state(self.source)
        tags: dict[str, Any] = state.setdefault("tags", {})
        errors: list[SourceError] = []
        wanted: set[str] = set()
        for image in self.config.images:
            for label in image.tags:
                key = f"{image.name}:{label}"
                wanted.add(key)
                actual = self.resolve(image, label)
                if actual is None:
                    log.info(
                        "tag template not resolvable yet",
                        source=self.source,
                        image=image.name,
                        tag=label,
                    )
                    continue
                result.tags += 1
                stored = tags.get(key)
                try:
                    fresh = self._read(image.name, actual, stored)
                except NotFound as exc:
                    # The tag vanished: its series go, and the poll reports the failure.
                    tags.pop(key, None)
                    self._write_tag(image.name, label, [])
                    errors.append(exc)
                    result.failed += 1
                    continue
                except SourceError as exc:
                    errors.append(exc)  # keep the last good values
                    result.failed += 1
                    continue
                if fresh is None:
                    result.unchanged += 1
                else:
                    result.fetched += 1
                    tags[key] = fresh
                entry = tags[key]
                self._write_tag(
                    image.name, label, [PlatformImage.from_json(p) for p in entry["platforms"]]
                )
        for key in [k for k in tags if k not in wanted]:
            name, _, label = key.rpartition(":")
            self._write_tag(name, label, [])
            del tags[key]
        self._write_sets(tags)
        self.store.set_source_state(self.source, state)
        if errors:
            for error in errors[1:]:
                if self.telemetry is not None:
                    self.telemetry.poll_errors.labels(self.source, error.reason).inc()
                log.warning(
                    "image failed", source=self.source, reason=error.reason, error=str(error)
                )
            raise errors[0]
        return result

    def _read(self, name: str, actual: str, stored: dict[str, Any] | None) -> dict[str, Any] | None:
        """None when the tag still points at the stored digest (one HEAD, 304 or same digest)."""
        same_tag = stored is not None and stored.get("actual") == actual
        head = self.client.head(name, actual, stored.get("etag") if same_tag and stored else None)
        if (
            same_tag
            and stored is not None
            and (head.status == 304 or (head.digest and head.digest == stored.get("digest")))
        ):
            return None
        platforms = self.client.platforms(name, head.digest or actual)
        return {
            "actual": actual,
            "digest": head.digest,
            "etag": head.etag,
            "platforms": [p.to_json() for p in platforms],
        }

    def _write_tag(self, name: str, label: str, platforms: list[PlatformImage]) -> None:
        prefix = (self.host, name, label)
        self.store.set_gauges(
            m.IMAGE_SIZE, prefix, {(*prefix, p.platform): float(p.size) for p in platforms}
        )
        self.store.set_gauges(
            m.IMAGE_LAYERS, prefix, {(*prefix, p.platform): float(p.layers) for p in platforms}
        )

    def _write_sets(self, tags: dict[str, Any]) -> None:
        members: dict[str, list[PlatformImage]] = {}
        for image in self.config.images:
            if image.set is None:
                continue
            members.setdefault(image.set, [])
            for label in image.tags:
                entry = tags.get(f"{image.name}:{label}")
                if entry:
                    members[image.set].extend(
                        PlatformImage.from_json(p) for p in entry["platforms"]
                    )
        for name, images in members.items():
            total, unique = set_sizes(images)
            self.store.set_gauges(
                m.IMAGE_SET_SIZE,
                (name,),
                {(name, "total"): float(total), (name, "unique"): float(unique)},
            )
