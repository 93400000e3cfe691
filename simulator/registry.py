"""An OCI distribution registry on loopback with ghcr.io's token flow: `/v2/` answers 401 with a
Bearer challenge, `/token` issues tokens (anonymous for public images, Basic credentials when
`credentials` is set), manifests by tag or digest with Accept negotiation and ETag/304.

Images: the mission's `before` set (web, celery, celerybeat: 1.4 GB each, 75 % shared) or the
`after` set (web and celery from one multi-stage Dockerfile: 2.5 GB, sharing their base), each an
OCI index with one linux/amd64 image and a buildx attestation manifest. Every tag of a known image
resolves (so `sha-<commit>` tags of each build exist)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from exporter.analysis.images import OCI_INDEX, OCI_MANIFEST
from simulator.loopback import LoopbackServer

MB = 1_000_000
# name → [(layer id, size)]; layer ids shared between images are shared blobs.
IMAGE_SETS: dict[str, dict[str, list[tuple[str, int]]]] = {
    "before": {
        "acme/webapp/web": [
            ("debian", 30 * MB),
            ("python-build", 520 * MB),
            ("deps", 500 * MB),
            ("web-app", 350 * MB),
        ],
        "acme/webapp/celery": [
            ("debian", 30 * MB),
            ("python-build", 520 * MB),
            ("deps", 500 * MB),
            ("celery-app", 350 * MB),
        ],
        "acme/webapp/celerybeat": [
            ("debian", 30 * MB),
            ("python-build", 520 * MB),
            ("deps", 500 * MB),
            ("beat-app", 350 * MB),
        ],
    },
    "after": {
        "acme/webapp/web": [
            ("debian-slim", 28 * MB),
            ("runtime-deps", 872 * MB),
            ("web-app", 350 * MB),
        ],
        "acme/webapp/celery": [
            ("debian-slim", 28 * MB),
            ("runtime-deps", 872 * MB),
            ("worker-app", 350 * MB),
        ],
    },
}
CONFIG_SIZE = 7_000


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _raw(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


class _Reject(Exception):
    """An error answer of the registry API (status, error code, message, extra headers)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class RegistrySimulator:
    def __init__(
        self,
        images: str = "before",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.images = images
        self.credentials = credentials
        self.requests: list[dict[str, Any]] = []
        # image name → "429" | "malformed" | "500": injected failures for the tests.
        self.faults: dict[str, str] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        simulator = self

        class Handler(_Handler):
            sim = simulator

        self._http = LoopbackServer(Handler, host, port, "registry-sim")
        self.server = self._http.server

    @property
    def url(self) -> str:
        return self._http.url

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def start(self) -> RegistrySimulator:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    # -- content ---------------------------------------------------------------------------------
    def manifests(self, name: str) -> dict[str, tuple[str, bytes]] | None:
        """digest → (media type, body) for the image's index, image manifest and attestation."""
        layers = IMAGE_SETS[self.images].get(name)
        if layers is None:
            return None
        config = {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _digest(f"config:{name}:{self.images}"),
            "size": CONFIG_SIZE,
        }
        image = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _digest(f"layer:{layer}"),
                    "size": size,
                }
                for layer, size in layers
            ],
        }
        image_raw = _raw(image)
        attestation = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.in-toto+json",
                "digest": _digest(f"att:{name}"),
                "size": 167,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.in-toto+json",
                    "digest": _digest(f"sbom:{name}"),
                    "size": 25_000,
                }
            ],
        }
        attestation_raw = _raw(attestation)
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": "sha256:" + hashlib.sha256(image_raw).hexdigest(),
                    "size": len(image_raw),
                    "platform": {"architecture": "amd64", "os": "linux"},
                },
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": "sha256:" + hashlib.sha256(attestation_raw).hexdigest(),
                    "size": len(attestation_raw),
                    "platform": {"architecture": "unknown", "os": "unknown"},
                    "annotations": {
                        "vnd.docker.reference.type": "attestation-manifest",
                        "vnd.docker.reference.digest": "sha256:"
                        + hashlib.sha256(image_raw).hexdigest(),
                    },
                },
            ],
        }
        index_raw = _raw(index)
        return {
            "sha256:" + hashlib.sha256(raw).hexdigest(): (
                OCI_MANIFEST if raw is not index_raw else OCI_INDEX,
                raw,
            )
            for raw in (index_raw, image_raw, attestation_raw)
        } | {"index": (OCI_INDEX, index_raw)}

    def expected(self) -> dict[str, dict[str, int]]:
        """Ground truth: per image its size (config + layers) and layer count; the set's total and
        unique bytes."""
        layers = IMAGE_SETS[self.images]
        sizes = {
            name: {"size": CONFIG_SIZE + sum(s for _, s in ls), "layers": len(ls)}
            for name, ls in layers.items()
        }
        unique_layers = {layer: size for ls in layers.values() for layer, size in ls}
        total = sum(v["size"] for v in sizes.values())
        unique = sum(unique_layers.values()) + CONFIG_SIZE * len(layers)
        return {**sizes, "_set": {"total": total, "unique": unique}}

    def issue_token(self, scope: str) -> str:
        token = "simreg_" + secrets.token_hex(12)
        with self._lock:
            self._tokens[token] = (scope, time.time() + 300)
        return token

    def token_valid(self, header: str, name: str) -> bool:
        if not header.startswith("Bearer "):
            return False
        with self._lock:
            found = self._tokens.get(header[7:])
        return (
            found is not None and found[1] > time.time() and found[0] == f"repository:{name}:pull"
        )


class _Handler(BaseHTTPRequestHandler):
    sim: RegistrySimulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """The request log is kept in memory."""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        with self.sim._lock:
            self.sim.requests.append(
                {"method": self.command, "path": urlsplit(self.path).path, "status": status}
            )

    def _error(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        self._send(
            status,
            json.dumps({"errors": [{"code": code, "message": message}]}).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _challenge(self, name: str) -> dict[str, str]:
        host = self.headers.get("Host", "127.0.0.1")
        return {
            "WWW-Authenticate": f'Bearer realm="http://{host}/token",service="sim-registry",'
            f'scope="repository:{name}:pull"'
        }

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        try:
            if split.path == "/token":
                self._token(split.query)
                return
            if split.path == "/v2/":
                raise _Reject(401, "UNAUTHORIZED", "authentication required", self._challenge(""))
            match = re.match(r"^/v2/(.+)/manifests/([^/]+)$", split.path)
            if match is None:
                raise _Reject(404, "NAME_UNKNOWN", "unknown")
            self._manifest(*match.groups())
        except _Reject as reject:
            self._error(reject.status, reject.code, reject.message, reject.headers)

    def _token(self, raw_query: str) -> None:
        sim = self.sim
        query = {k: v[-1] for k, v in parse_qs(raw_query).items()}
        if sim.credentials is not None:
            expected = "Basic " + base64.b64encode(":".join(sim.credentials).encode()).decode()
            if self.headers.get("Authorization") != expected:
                raise _Reject(401, "UNAUTHORIZED", "authentication required")
        token = sim.issue_token(query.get("scope", ""))
        answer = json.dumps({"token": token, "expires_in": 300}).encode()
        self._send(200, answer, {"Content-Type": "application/json"})

    def _manifest(self, name: str, reference: str) -> None:
        media_type, body = self._find(name, reference)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        etag = f'"{digest}"'
        if self.headers.get("If-None-Match") == etag:
            self._send(304, b"", {"Docker-Content-Digest": digest, "Etag": etag})
            return
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest, "Etag": etag}
        self._send(200, body, headers)

    def _find(self, name: str, reference: str) -> tuple[str, bytes]:
        sim = self.sim
        if not sim.token_valid(self.headers.get("Authorization", ""), name):
            raise _Reject(401, "UNAUTHORIZED", "authentication required", self._challenge(name))
        fault = sim.faults.get(name)
        if fault == "429":
            too_many = "retry-after: 880.092µs, allowed: 44000/minute"
            raise _Reject(429, "TOOMANYREQUESTS", too_many, {"Retry-After": "120"})
        if fault == "500":
            raise _Reject(500, "UNKNOWN", "internal error")
        manifests = sim.manifests(name)
        if manifests is None:
            raise _Reject(404, "NAME_UNKNOWN", "repository name not known to registry")
        if fault == "malformed":
            # Every reference of this image answers with a truncated index.
            broken = (
                b'{"schemaVersion": 2, "mediaType": "'
                + OCI_INDEX.encode()
                + b'", "manifests": "oops"'
            )
            manifests = {reference: (OCI_INDEX, broken), "index": (OCI_INDEX, broken)}
        found = manifests.get(reference) if reference.startswith("sha256:") else manifests["index"]
        if found is None:
            raise _Reject(404, "MANIFEST_UNKNOWN", "manifest unknown")
        if found[0] == OCI_INDEX and OCI_INDEX not in self.headers.get("Accept", ""):
            no_index = "OCI index found, but accept header does not support OCI indexes"
            raise _Reject(404, "MANIFEST_UNKNOWN", no_index)
        return found
