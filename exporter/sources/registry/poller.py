"""One registry's poll: each configured image tag (templates filled from the latest successful run)
→ per-platform sizes; an unchanged tag costs one HEAD; sets' total and unique bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from exporter import metrics as m
from exporter.analysis.images import PlatformImage, set_sizes
from exporter.config import ImageConfig, RegistryConfig
from exporter.logging import get_logger
from exporter.observations import replace_unit
from exporter.sources.errors import NotFound, SourceError, TransportError
from exporter.sources.github.poller import LatestSuccess, latest_success_key
from exporter.sources.registry.client import RegistryClient
from exporter.store import StateRecord, Store
from exporter.telemetry import Telemetry

log = get_logger(__name__)
_TEMPLATE = re.compile(r"\{head_sha(?::(\d+))?\}")


class TagState(BaseModel):
    actual: str
    digest: str | None = None
    etag: str | None = None
    platforms: list[dict[str, Any]] = Field(default_factory=list)


class RegistryTags(StateRecord):
    NAME = "tags"
    tags: dict[str, TagState] = Field(default_factory=dict)


@dataclass
class RegistryPollResult:
    tags: int = 0
    unchanged: int = 0
    fetched: int = 0
    failed: int = 0


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
        record = self.store.records.get(f"github:{image.run.repository}", LatestSuccess)
        latest = record.latest_success.get(latest_success_key(image.run.workflow, image.run.branch))
        if latest is None:
            return None
        sha = latest.head_sha
        return _TEMPLATE.sub(lambda mt: sha[: int(mt.group(1))] if mt.group(1) else sha, tag)

    def poll(self) -> RegistryPollResult:
        result = RegistryPollResult()
        state = self.store.records.get(self.source, RegistryTags)
        errors: list[SourceError] = []
        wanted = {f"{image.name}:{label}" for image in self.config.images for label in image.tags}
        for image, label in [(i, label) for i in self.config.images for label in i.tags]:
            self._poll_tag(image, label, state, result, errors)
            if errors and isinstance(errors[-1], TransportError):
                # The registry can't be reached: every other tag would fail the same way. One
                # failure, counted once; their last values stay.
                break
        for key in [k for k in state.tags if k not in wanted]:
            name, _, label = key.rpartition(":")
            self._write_tag(name, label, [])
            del state.tags[key]
        self._write_sets(state)
        self.store.records.put(self.source, state)
        if errors:
            for error in errors[1:]:
                self._skip(error.reason, str(error))
            raise errors[0]
        return result

    def _poll_tag(
        self,
        image: ImageConfig,
        label: str,
        state: RegistryTags,
        result: RegistryPollResult,
        errors: list[SourceError],
    ) -> None:
        key = f"{image.name}:{label}"
        actual = self.resolve(image, label)
        if actual is None:
            log.info(
                "tag template not resolvable yet", source=self.source, image=image.name, tag=label
            )
            return
        result.tags += 1
        try:
            fresh = self._read(image.name, actual, state.tags.get(key))
        except NotFound as exc:
            # The tag vanished: its series go, and the poll reports the failure.
            state.tags.pop(key, None)
            self._write_tag(image.name, label, [])
            errors.append(exc)
            result.failed += 1
            return
        except SourceError as exc:
            errors.append(exc)  # keep the last good values
            result.failed += 1
            return
        if fresh is None:
            result.unchanged += 1
        else:
            result.fetched += 1
            state.tags[key] = fresh
        platforms = [PlatformImage.from_json(p) for p in state.tags[key].platforms]
        self._write_tag(image.name, label, platforms)

    def _read(self, name: str, actual: str, stored: TagState | None) -> TagState | None:
        """None when the tag still points at the stored digest (one HEAD, 304 or same digest)."""
        same_tag = stored is not None and stored.actual == actual
        head = self.client.head(name, actual, stored.etag if same_tag and stored else None)
        if (
            same_tag
            and stored is not None
            and (head.status == 304 or (head.digest and head.digest == stored.digest))
        ):
            return None
        found = self.client.platforms(name, head.digest or actual)
        if found.cut:
            self._skip("platforms_capped", f"{name}:{actual}: {found.cut} platforms not read")
        return TagState(
            actual=actual,
            digest=head.digest,
            etag=head.etag,
            platforms=[p.to_json() for p in found.images],
        )

    def _skip(self, reason: str, detail: str) -> None:
        if self.telemetry is not None:
            self.telemetry.poll_errors.labels(self.source, reason).inc()
        log.warning("image skipped", source=self.source, reason=reason, detail=detail)

    def _write_tag(self, name: str, label: str, platforms: list[PlatformImage]) -> None:
        prefix = (self.host, name, label)
        sizes = {(*prefix, p.platform): float(p.size) for p in platforms}
        layers = {(*prefix, p.platform): float(p.layers) for p in platforms}
        self.store.commit(replace_unit(self.source, m.IMAGE_SIZE, prefix, sizes.items()))
        self.store.commit(replace_unit(self.source, m.IMAGE_LAYERS, prefix, layers.items()))

    def _write_sets(self, state: RegistryTags) -> None:
        members: dict[str, list[PlatformImage]] = {}
        for image in self.config.images:
            if image.set is None:
                continue
            members.setdefault(image.set, [])
            for label in image.tags:
                entry = state.tags.get(f"{image.name}:{label}")
                if entry is not None:
                    members[image.set].extend(PlatformImage.from_json(p) for p in entry.platforms)
        for name, images in members.items():
            total, unique = set_sizes(images)
            values = {(name, "total"): float(total), (name, "unique"): float(unique)}
            self.store.commit(replace_unit(self.source, m.IMAGE_SET_SIZE, (name,), values.items()))
