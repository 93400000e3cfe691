"""OCI / Docker manifests → per-platform compressed sizes and layer counts, and set totals with
shared layers counted once. Pure: parsed manifests in, numbers out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

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


def media_type(manifest: dict[str, Any], header: str | None) -> str:
    declared = manifest.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    return (header or "").split(";")[0].strip()


def is_index(manifest: dict[str, Any], header: str | None) -> bool:
    kind = media_type(manifest, header)
    return kind in INDEX_TYPES or (not kind and isinstance(manifest.get("manifests"), list))


def platform_name(platform: object) -> str:
    if not isinstance(platform, dict):
        return "unknown/unknown"
    name = f"{platform.get('os', 'unknown')}/{platform.get('architecture', 'unknown')}"
    return f"{name}/{platform['variant']}" if platform.get("variant") else name


def platform_entries(index: dict[str, Any]) -> list[tuple[str, str]]:
    """(platform, digest) of each real image in an index; buildx attestation manifests
    (unknown/unknown, vnd.docker.reference.type=attestation-manifest) are skipped."""
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise ManifestError("index without a manifests list")
    found = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            raise ManifestError("index entry without a digest")
        annotations = entry.get("annotations") or {}
        if (
            isinstance(annotations, dict)
            and annotations.get("vnd.docker.reference.type") == "attestation-manifest"
        ):
            continue
        name = platform_name(entry.get("platform"))
        if name.startswith("unknown/unknown"):
            continue
        found.append((name, entry["digest"]))
    return found


def image_size(manifest: dict[str, Any], platform: str, digest: str) -> PlatformImage:
    """size = config.size + Σ layers[].size (compressed, as pushed)."""
    config, layers = manifest.get("config"), manifest.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise ManifestError("image manifest without config and layers")
    blobs: dict[str, int] = {}
    for blob in [config, *layers]:
        if not isinstance(blob, dict) or not isinstance(blob.get("size"), int) or blob["size"] < 0:
            raise ManifestError("blob descriptor without a size")
        blobs[str(blob.get("digest"))] = blob["size"]
    size = int(config["size"]) + sum(int(layer["size"]) for layer in layers)
    return PlatformImage(platform, digest, size, len(layers), blobs)


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
