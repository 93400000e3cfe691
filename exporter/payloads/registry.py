"""OCI / Docker registry payloads the exporter reads: manifests, indexes and token answers, as
pydantic models (only the fields used; wrong types refused with the field named)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.sources.errors import MalformedResponse


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Platform(_Payload):
    os: str = "unknown"
    architecture: str = "unknown"
    variant: str | None = None

    @property
    def name(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


class Descriptor(_Payload):
    media_type: str | None = Field(default=None, alias="mediaType")
    digest: str
    size: Annotated[int, Field(ge=0, strict=True)] = 0
    platform: Platform | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


class Manifest(_Payload):
    """An image manifest (OCI or Docker v2) or an index / manifest list (`manifests`)."""

    media_type: str | None = Field(default=None, alias="mediaType")
    config: Descriptor | None = None
    layers: list[Descriptor] | None = None
    manifests: list[Descriptor] | None = None


class TokenAnswer(_Payload):
    token: str | None = None
    access_token: str | None = None
    expires_in: Annotated[float, Field(gt=0, le=86400)] = 60.0

    @property
    def value(self) -> str | None:
        return self.token or self.access_token


def parse_manifest(data: Any, what: str) -> Manifest:
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "manifest"
        raise MalformedResponse(f"{what}: {where}: {first.get('msg', 'invalid')}") from None
