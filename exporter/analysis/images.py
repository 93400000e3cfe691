"""OCI / Docker manifests → per-platform compressed sizes and layer counts, and set totals with
shared layers counted once. Pure: parsed manifests in, numbers out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from exporter.payloads.registry import Manifest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}


class ManifestError(ValueError):
    """Not a manifest this exporter can size."""


@dataclass
class PlatformImage:
    platform: str
    digest: str
    size: int
    layers: int
    blobs: dict[str, int] = field(default_factory=dict)  # config + layer digests → sizes

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "digest": self.digest,
            "size": self.size,
            "layers": self.layers,
            "blobs": self.blobs,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlatformImage:
        return cls(
            str(data["platform"]),
            str(data["digest"]),
            int(data["size"]),
            int(data["layers"]),
            {str(k): int(v) for k, v in dict(data.get("blobs", {})).items()},
        )


def media_type(manifest: Manifest, header: str | None) -> str:
    if manifest.media_type:
        return manifest.media_type
    return (header or "").split(";")[0].strip()


def is_index(manifest: Manifest, header: str | None) -> bool:
    kind = media_type(manifest, header)
    return kind in INDEX_TYPES or (not kind and manifest.manifests is not None)


def platform_entries(index: Manifest) -> list[tuple[str, str]]:
    """(platform, digest) of each real image in an index; buildx attestation manifests
    (unknown/unknown, vnd.docker.reference.type=attestation-manifest) are skipped."""
    if index.manifests is None:
        raise ManifestError("index without a manifests list")
    found = []
    for entry in index.manifests:
        if entry.annotations.get("vnd.docker.reference.type") == "attestation-manifest":
            continue
        name = entry.platform.name if entry.platform is not None else "unknown/unknown"
        if name.startswith("unknown/unknown"):
            continue
        found.append((name, entry.digest))
    return found


def image_size(manifest: Manifest, platform: str, digest: str) -> PlatformImage:
    """size = config.size + Σ layers[].size (compressed, as pushed)."""
    if manifest.config is None or manifest.layers is None:
        raise ManifestError("image manifest without config and layers")
    blobs: dict[str, int] = {}
    for blob in [manifest.config, *manifest.layers]:
        blobs[blob.digest] = blob.size
    size = manifest.config.size + sum(layer.size for layer in manifest.layers)
    return PlatformImage(platform, digest, size, len(manifest.layers), blobs)


def set_sizes(images: Iterable[PlatformImage]) -> tuple[int, int]:
    """(total, unique): the sum over distinct platform manifests, and over distinct blobs."""
    manifests: dict[str, PlatformImage] = {}
    for image in images:
        manifests.setdefault(image.digest, image)
    total = sum(image.size for image in manifests.values())
    blobs: dict[str, int] = {}
    for image in manifests.values():
        blobs.update(image.blobs)
    return total, sum(blobs.values())
