"""The manifest model of the OCI Distribution API: a manifest exactly as a registry stores it (its
bytes, media type and digest) and the descriptors it references (blobs, or a multi-platform
index's child manifests).

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from docker_delivery.errors import RegistryProtocolError

DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"

MANIFEST_MEDIA_TYPES: Final = (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX)
"""The manifest media types the client accepts (sent in ``Accept`` on every manifest read)."""

INDEX_MEDIA_TYPES: Final = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
ACCEPT: Final = ", ".join(MANIFEST_MEDIA_TYPES)
_FOREIGN_LAYERS: Final = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)
_GENERIC_CONTENT_TYPES: Final = frozenset({"", "application/json", "text/plain"})


@dataclass(frozen=True)
class Descriptor:
    """A reference from a manifest to a blob or to another manifest."""

    media_type: str
    digest: str
    size: int | None
    platform: Mapping[str, Any] | None = None
    urls: tuple[str, ...] = ()

    @property
    def is_foreign(self) -> bool:
        """A non-distributable layer: stored elsewhere (``urls``), never in the registry."""
        return self.media_type in _FOREIGN_LAYERS


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as the registry stores it: its bytes, media type and digest.

    ``raw`` is kept byte for byte: the digest is the hash of these bytes, so re-serialising the
    JSON would make another image.
    """

    media_type: str
    digest: str
    raw: bytes = field(repr=False)

    @classmethod
    def from_bytes(
        cls, raw: bytes, media_type: str | None = None, *, digest: str | None = None
    ) -> Manifest:
        """Build a manifest from its bytes; the media type falls back to the JSON's own.

        ``digest`` defaults to the sha256 of ``raw``; when given it is checked against ``raw``.
        """
        document = _parse_manifest_json(raw)
        body_type = document.get("mediaType")
        header_type = (media_type or "").split(";", 1)[0].strip()
        if isinstance(body_type, str) and body_type:
            kind = body_type
        elif header_type not in _GENERIC_CONTENT_TYPES:
            kind = header_type
        else:
            kind = OCI_INDEX if "manifests" in document else OCI_MANIFEST
        computed = _digest_of(raw, (digest or "sha256:").split(":", 1)[0])
        if digest is not None and digest != computed:
            raise RegistryProtocolError(
                f"manifest bytes hash to {computed}, not {digest}: the registry returned other "
                "content than was asked for"
            )
        return cls(kind, computed, raw)

    @property
    def document(self) -> dict[str, Any]:
        """The manifest's JSON."""
        return _parse_manifest_json(self.raw)

    @property
    def is_index(self) -> bool:
        """True for a manifest list / OCI index (a multi-platform image)."""
        if self.media_type in INDEX_MEDIA_TYPES:
            return True
        document = self.document
        return "manifests" in document and "layers" not in document

    @property
    def blob_descriptors(self) -> list[Descriptor]:
        """Config then layers of a single-platform manifest (empty for an index)."""
        if self.is_index:
            return []
        document = self.document
        entries: list[Any] = []
        if isinstance(document.get("config"), dict):
            entries.append(document["config"])
        entries.extend(document.get("layers") or [])
        return [_descriptor(entry) for entry in entries]

    @property
    def blobs(self) -> list[str]:
        """The digests of the config and layer blobs (empty for an index)."""
        return [descriptor.digest for descriptor in self.blob_descriptors]

    @property
    def child_descriptors(self) -> list[Descriptor]:
        """The platform manifests of an index (empty for a single manifest)."""
        if not self.is_index:
            return []
        return [_descriptor(entry) for entry in self.document.get("manifests") or []]

    @property
    def children(self) -> list[str]:
        """The digests of an index's child manifests (empty for a single manifest)."""
        return [descriptor.digest for descriptor in self.child_descriptors]


def _parse_manifest_json(raw: bytes) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryProtocolError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RegistryProtocolError("manifest is not a JSON object")
    return document


def _descriptor(entry: Any) -> Descriptor:
    if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
        raise RegistryProtocolError(f"manifest has a descriptor without a digest: {entry!r}")
    size = entry.get("size")
    platform = entry.get("platform")
    urls = entry.get("urls") or ()
    return Descriptor(
        media_type=str(entry.get("mediaType", "")),
        digest=entry["digest"],
        size=size if isinstance(size, int) else None,
        platform=platform if isinstance(platform, dict) else None,
        urls=tuple(str(url) for url in urls),
    )


def _digest_of(data: bytes, algorithm: str = "sha256") -> str:
    if algorithm not in ("sha256", "sha512"):
        raise RegistryProtocolError(f"unsupported digest algorithm {algorithm!r}")
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def pick_platform(children: list[Descriptor]) -> Descriptor | None:
    """The linux/amd64 child of an index, else its first real (not attestation) platform."""
    real = [c for c in children if (c.platform or {}).get("os") not in (None, "unknown")]
    for child in real:
        platform = child.platform or {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return child
    if real:
        return real[0]
    return children[0] if children else None
