"""RegistryClient: the OCI Distribution API (v2) of one registry, over httpx.

What delivery needs from a registry, and nothing more:

* :meth:`RegistryClient.resolve` a tag to the digest it points at;
* :meth:`RegistryClient.tag` a digest with an environment tag (promotion): the manifest is read
  by digest and written back under the tag, byte for byte, so no blob moves;
* :meth:`RegistryClient.copy` an image into another repository (cross-repository blob mount)
  or from another registry (blobs streamed from one to the other, never held in memory);
* list tags, read an image's labels, and look up or delete what tests leave behind.

Authentication is what ``docker login`` does: anonymous first; on a 401 either HTTP Basic with
the given login, or a bearer token fetched from the realm the registry names (cached per scope).
Transient failures (connection errors, timeouts, 429 and 5xx) are retried with exponential
backoff before :class:`~docker_delivery.errors.RegistryUnavailable` is raised. The password never
appears in ``repr()``, in error messages, or in the log.

This is domain code: it must never import airflow.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

import httpx

from docker_delivery import __version__
from docker_delivery.errors import (
    ImageNotFound,
    InvalidReference,
    RegistryError,
    RegistryProtocolError,
    RegistryUnavailable,
    Unauthorized,
)
from docker_delivery.images.ref import ImageRef

__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "MANIFEST_MEDIA_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Descriptor",
    "Manifest",
    "RegistryClient",
]

DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"

MANIFEST_MEDIA_TYPES: Final = (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX)
"""The manifest media types the client accepts (sent in ``Accept`` on every manifest read)."""

INDEX_MEDIA_TYPES: Final = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})

_ACCEPT: Final = ", ".join(MANIFEST_MEDIA_TYPES)
_FOREIGN_LAYERS: Final = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)
_GENERIC_CONTENT_TYPES: Final = frozenset({"", "application/json", "text/plain"})

_TRANSIENT_STATUS: Final = frozenset({429, 500, 502, 503, 504})
_MAX_BACKOFF: Final = 30.0
"""Longest wait between two attempts computed from ``backoff`` (seconds)."""
_MAX_RETRY_AFTER: Final = 120.0
"""Longest ``Retry-After`` honoured (seconds); a registry asking for more gets this."""
_CHUNK: Final = 1024 * 1024
"""Bytes read from a source blob at a time when streaming it to another registry."""
_MAX_CONFIG_BYTES: Final = 16 * 1024 * 1024
"""Largest image config blob :meth:`RegistryClient.image_labels` reads into memory."""

_DOCKER_HUB: Final = "docker.io"
_DOCKER_HUB_API: Final = "registry-1.docker.io"
_CHALLENGE_PARAM: Final = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')

_sleep: Callable[[float], None] = time.sleep
"""How the client waits between attempts (replaced in unit tests)."""


# -- manifests -----------------------------------------------------------------------------------


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


# -- the client ------------------------------------------------------------------------------------


class RegistryClient:
    """A client of ONE registry (``host[:port]``), e.g. ``RegistryClient("127.0.0.1:5000")``.

    ``scheme`` defaults to ``http`` for loopback registries (``localhost``, ``127.0.0.0/8``,
    ``[::1]``) and ``https`` otherwise; ``docker.io`` is served by ``registry-1.docker.io``.
    ``retries`` is how many times a transient failure is retried (so at most ``retries + 1``
    attempts), waiting ``backoff * 2**attempt`` seconds (capped at 30 s, at least what a
    ``Retry-After`` header asks). ``log`` receives one line per change made (tag moved, blob
    mounted or copied). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        registry: str,
        *,
        username: str | None = None,
        password: str | None = None,
        scheme: str | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.registry = _normalise_registry(registry)
        if scheme is None:
            scheme = "http" if _is_loopback(self.registry) else "https"
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme must be 'http' or 'https', got {scheme!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        api_host = _DOCKER_HUB_API if self.registry == _DOCKER_HUB else self.registry
        self.base_url = f"{scheme}://{api_host}"
        self.username = username
        self._password = password
        self._retries = retries
        self._backoff = max(0.0, backoff)
        self._log: Callable[[str], None] = log if log is not None else _no_log
        self._use_basic = False
        self._tokens: dict[str, str] = {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=True,
            headers={"User-Agent": f"docker-delivery/{__version__}"},
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        user = f", username={self.username!r}" if self.username is not None else ""
        return f"RegistryClient({self.registry!r}, url={self.base_url!r}{user})"

    # -- reading -----------------------------------------------------------------------------------

    def resolve(self, ref: ImageRef) -> str:
        """The digest ``ref`` names: its tag (``latest`` when none) resolved, or its digest checked.

        Raises :class:`~docker_delivery.errors.ImageNotFound` when the registry lacks it.
        """
        self._check_ref(ref)
        reference = ref.digest or ref.tag_or_latest
        url = self._manifest_url(ref.repository, reference)
        response = self._request(
            "HEAD", url, scope=_pull(ref.repository), headers={"Accept": _ACCEPT}
        )
        with _closing(response):
            if response.status_code == 404:
                raise self._not_found(response, ref.repository, reference, "image")
            if response.status_code != 200:
                raise self._failure(response, f"resolving {ref}")
            header: str | None = response.headers.get("Docker-Content-Digest")
        if header and ref.digest is not None:
            if _same_algorithm(header, ref.digest) and header != ref.digest:
                raise RegistryProtocolError(
                    f"registry {self.registry} answered {header} for {ref}",
                    registry=self.registry,
                )
            return ref.digest
        if header:
            return str(header)
        return self._fetch_manifest(ref.repository, reference).digest

    def get_manifest(self, ref: ImageRef) -> Manifest:
        """The manifest ``ref`` names (by digest when pinned, else by tag), verified by digest."""
        self._check_ref(ref)
        return self._fetch_manifest(ref.repository, ref.digest or ref.tag_or_latest)

    def tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of ``repository``, following the registry's pagination.

        ``page_size`` asks for pages of that many tags (the ``n`` parameter); by default the
        registry chooses. Raises :class:`~docker_delivery.errors.ImageNotFound` for an unknown
        repository.
        """
        url: str | None = f"{self.base_url}/v2/{repository}/tags/list"
        params: dict[str, str] = {"n": str(page_size)} if page_size else {}
        found: list[str] = []
        seen: set[str] = set()
        requested: set[str] = set()
        while url is not None:
            request_key = f"{url}?{sorted(params.items())}"
            if request_key in requested:
                break  # a registry that keeps answering the same page
            requested.add(request_key)
            response = self._request("GET", url, scope=_pull(repository), params=params)
            with _closing(response):
                if response.status_code == 404:
                    raise self._not_found(response, repository, None, "repository")
                if response.status_code != 200:
                    raise self._failure(response, f"listing the tags of {repository}")
                page = _json_object(response, self.registry).get("tags")
                if not isinstance(page, list):
                    page = []
                next_link = response.links.get("next", {}).get("url")
            new = [tag for tag in page if isinstance(tag, str) and tag not in seen]
            found.extend(new)
            seen.update(new)
            if next_link:
                url, params = str(httpx.URL(url).join(next_link)), {}
            elif page_size and len(page) >= page_size and new:
                url = f"{self.base_url}/v2/{repository}/tags/list"
                params = {"n": str(page_size), "last": new[-1]}
            else:
                url = None
        return found

    def list_tags(self, ref: ImageRef) -> list[str]:
        """Every tag of ``ref``'s repository (what promotion's tag store offers)."""
        self._check_ref(ref)
        return self.tags(ref.repository)

    def image_labels(self, ref: ImageRef) -> dict[str, str]:
        """The labels of the image ``ref`` names (of its linux/amd64 image for an index)."""
        self._check_ref(ref)
        manifest = self._fetch_manifest(ref.repository, ref.digest or ref.tag_or_latest)
        if manifest.is_index:
            child = _pick_platform(manifest.child_descriptors)
            if child is None:
                return {}
            manifest = self._fetch_manifest(ref.repository, child.digest)
        config = manifest.document.get("config")
        if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
            return {}
        data = self._read_blob(ref.repository, config["digest"], limit=_MAX_CONFIG_BYTES)
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {}
        labels = (document.get("config") or {}).get("Labels") if isinstance(document, dict) else {}
        if not isinstance(labels, dict):
            return {}
        return {str(key): str(value) for key, value in labels.items()}

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether ``repository`` holds (or links) the blob ``digest``."""
        url = f"{self.base_url}/v2/{repository}/blobs/{digest}"
        response = self._request("HEAD", url, scope=_pull(repository))
        with _closing(response):
            if response.status_code == 200:
                return True
            if response.status_code == 404:
                return False
            raise self._failure(response, f"looking up blob {digest} in {repository}")

    # -- writing ---------------------------------------------------------------------------------

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        """Store ``manifest`` in ``repository`` under ``reference`` (a tag or its digest).

        Returns the digest, checked against the registry's ``Docker-Content-Digest``.
        """
        url = self._manifest_url(repository, reference)
        response = self._request(
            "PUT",
            url,
            scope=_push(repository),
            headers={"Content-Type": manifest.media_type},
            content=manifest.raw,
        )
        with _closing(response):
            if response.status_code not in (200, 201, 202):
                where = self._display_name(repository, reference)
                codes = _error_codes(response)
                if "MANIFEST_BLOB_UNKNOWN" in codes or "BLOB_UNKNOWN" in codes:
                    raise ImageNotFound(
                        f"registry {self.registry} refused the manifest {manifest.digest} for "
                        f"{where}: it references blobs {repository} does not hold "
                        f"({_error_text(response)}); copy the image with its blobs first",
                        registry=self.registry,
                        reference=where,
                    )
                raise self._failure(response, f"writing the manifest {where}")
            header: str | None = response.headers.get("Docker-Content-Digest")
        if header and header != manifest.digest:
            raise RegistryProtocolError(
                f"registry {self.registry} stored the manifest for "
                f"{self._display_name(repository, reference)} as {header}, but its bytes hash "
                f"to {manifest.digest}",
                registry=self.registry,
            )
        return manifest.digest

    def tag(self, pinned: ImageRef, tag: str) -> ImageRef:
        """Point ``tag`` at ``pinned``'s digest (promotion): no rebuild, no blob transfer.

        The manifest is read by digest and written back under the tag byte for byte. Returns
        ``pinned`` carrying the tag. Refuses a reference that is not pinned by digest
        (:class:`~docker_delivery.errors.InvalidReference`).
        """
        pinned = pinned.require_pinned()
        self._check_ref(pinned)
        digest = str(pinned.digest)
        target = ImageRef(pinned.registry, pinned.repository, tag, digest)
        manifest = self._fetch_manifest(pinned.repository, digest)
        self.put_manifest(pinned.repository, tag, manifest)
        self._log(f"tagged {target.name}:{tag} -> {digest}")
        return target

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete the manifest ``digest`` (and with it every tag pointing at it)."""
        url = self._manifest_url(repository, digest)
        response = self._request("DELETE", url, scope=_delete(repository))
        with _closing(response):
            if response.status_code == 404:
                raise self._not_found(response, repository, digest, "manifest")
            if response.status_code == 405:
                raise RegistryProtocolError(
                    f"registry {self.registry} does not allow deletes "
                    f"({_error_text(response)}): enable storage.delete in its configuration",
                    registry=self.registry,
                )
            if response.status_code not in (200, 202):
                raise self._failure(response, f"deleting {repository}@{digest}")
        self._log(f"deleted {self.registry}/{repository}@{digest}")

    def copy(
        self, src: ImageRef, dst: ImageRef, *, source: RegistryClient | None = None
    ) -> ImageRef:
        """Copy the pinned image ``src`` into ``dst``'s repository in this registry.

        ``src`` lives in this registry (``source`` omitted) or in ``source``'s. Blobs already
        in the destination are skipped; within one registry the others are mounted from ``src``'s
        repository (no data moves), across registries they are streamed from ``source``. The
        children of an index are copied first. The manifest is then stored under ``dst``'s tag
        (by digest when ``dst`` has none). Returns the digest-pinned destination reference.
        """
        src = src.require_pinned()
        source_client = source if source is not None else self
        source_client._check_ref(src)
        self._check_ref(dst)
        digest = str(src.digest)
        if dst.digest is not None and dst.digest != digest:
            raise InvalidReference(
                str(dst), f"its digest differs from the source's ({digest}); drop it or match it"
            )
        same_registry = source_client.base_url == self.base_url
        manifest = source_client._fetch_manifest(src.repository, digest)
        self._copy_content(source_client, src.repository, dst.repository, manifest, same_registry)
        self.put_manifest(dst.repository, dst.tag or digest, manifest)
        result = ImageRef(self.registry, dst.repository, dst.tag, digest)
        self._log(f"copied {src} -> {result}")
        return result

    # -- copy internals --------------------------------------------------------------------------

    def _copy_content(
        self,
        source: RegistryClient,
        src_repository: str,
        dst_repository: str,
        manifest: Manifest,
        same_registry: bool,
    ) -> None:
        """Copy what ``manifest`` references (blobs; child manifests of an index)."""
        for child in manifest.child_descriptors:
            if self._manifest_exists(dst_repository, child.digest):
                continue
            child_manifest = source._fetch_manifest(src_repository, child.digest)
            self._copy_content(
                source, src_repository, dst_repository, child_manifest, same_registry
            )
            self.put_manifest(dst_repository, child.digest, child_manifest)
        for blob in manifest.blob_descriptors:
            if blob.is_foreign:
                continue
            self._copy_blob(source, src_repository, dst_repository, blob, same_registry)

    def _copy_blob(
        self,
        source: RegistryClient,
        src_repository: str,
        dst_repository: str,
        blob: Descriptor,
        same_registry: bool,
    ) -> None:
        if self.blob_exists(dst_repository, blob.digest):
            return
        location: str | None = None
        if same_registry:
            location = self._start_upload(dst_repository, mount=blob.digest, source=src_repository)
            if location is None:
                self._log(f"mounted blob {blob.digest} from {src_repository} into {dst_repository}")
                return
        self._stream_blob(source, src_repository, dst_repository, blob, location)
        size = f" ({_human_size(blob.size)})" if blob.size is not None else ""
        self._log(
            f"copied blob {blob.digest}{size} from {source.registry}/{src_repository} "
            f"into {self.registry}/{dst_repository}"
        )

    def _start_upload(
        self, repository: str, *, mount: str | None = None, source: str | None = None
    ) -> str | None:
        """Open a blob upload; with ``mount``, try a cross-repository mount first.

        Returns None when the blob was mounted, else the upload's location.
        """
        url = f"{self.base_url}/v2/{repository}/blobs/uploads/"
        params: dict[str, str] = {}
        scope = _push(repository)
        if mount is not None and source is not None:
            params = {"mount": mount, "from": source}
            scope = f"{scope} {_pull(source)}"
        response = self._request("POST", url, scope=scope, params=params)
        with _closing(response):
            if response.status_code == 201 and mount is not None:
                return None
            if response.status_code != 202:
                raise self._failure(response, f"starting a blob upload to {repository}")
            location = response.headers.get("Location")
        if not location:
            raise RegistryProtocolError(
                f"registry {self.registry} opened a blob upload without a Location header",
                registry=self.registry,
            )
        return str(httpx.URL(url).join(location))

    def _new_upload(self, repository: str) -> str:
        location = self._start_upload(repository)
        if location is None:  # only a mount is answered with 201; not asked for here
            raise RegistryProtocolError(
                f"registry {self.registry} did not open a blob upload to {repository}",
                registry=self.registry,
            )
        return location

    def _stream_blob(
        self,
        source: RegistryClient,
        src_repository: str,
        dst_repository: str,
        blob: Descriptor,
        location: str | None,
    ) -> None:
        """Stream one blob from ``source`` into a monolithic upload here, chunk by chunk.

        A transfer that breaks is restarted from the beginning (a new read, a new upload), up to
        ``retries`` times.
        """
        attempts = self._retries + 1
        last_error = ""
        for attempt in range(attempts):
            if attempt:
                _sleep(self._delay(attempt - 1, None))
            upload = location if location is not None else self._new_upload(dst_repository)
            location = None
            with source._open_blob(src_repository, blob.digest) as body:
                length = blob.size if blob.size is not None else body.headers.get("Content-Length")
                headers = {"Content-Type": "application/octet-stream"}
                if length is not None:
                    headers["Content-Length"] = str(length)
                try:
                    response = self._request(
                        "PUT",
                        upload,
                        scope=_push(dst_repository),
                        params={"digest": blob.digest},
                        headers=headers,
                        content=body.iter_bytes(_CHUNK),
                        attempts=1,
                    )
                except RegistryUnavailable as exc:
                    last_error = exc.last_error or str(exc)
                    continue
            with _closing(response):
                if response.status_code != 201:
                    raise self._failure(response, f"uploading blob {blob.digest}")
                header: str | None = response.headers.get("Docker-Content-Digest")
            if header and header != blob.digest:
                raise RegistryProtocolError(
                    f"registry {self.registry} stored blob {blob.digest} as {header}",
                    registry=self.registry,
                )
            return
        raise self._unavailable(attempts, last_error)

    @contextmanager
    def _open_blob(self, repository: str, digest: str) -> Iterator[httpx.Response]:
        url = f"{self.base_url}/v2/{repository}/blobs/{digest}"
        response = self._request("GET", url, scope=_pull(repository), stream=True)
        try:
            if response.status_code == 404:
                response.read()
                raise self._not_found(response, repository, digest, "blob")
            if response.status_code != 200:
                response.read()
                raise self._failure(response, f"reading blob {digest} from {repository}")
            yield response
        finally:
            response.close()

    def _read_blob(self, repository: str, digest: str, *, limit: int) -> bytes:
        with self._open_blob(repository, digest) as response:
            hasher = hashlib.new(digest.split(":", 1)[0])
            chunks: list[bytes] = []
            total = 0
            for chunk in response.iter_bytes(_CHUNK):
                total += len(chunk)
                if total > limit:
                    raise RegistryProtocolError(
                        f"blob {digest} in {repository} is larger than {limit} bytes",
                        registry=self.registry,
                    )
                hasher.update(chunk)
                chunks.append(chunk)
        data = b"".join(chunks)
        if f"{digest.split(':', 1)[0]}:{hasher.hexdigest()}" != digest:
            raise RegistryProtocolError(
                f"blob {digest} from {self.registry}/{repository} does not match its digest",
                registry=self.registry,
            )
        return data

    # -- manifest internals ----------------------------------------------------------------------

    def _manifest_url(self, repository: str, reference: str) -> str:
        return f"{self.base_url}/v2/{repository}/manifests/{reference}"

    def _fetch_manifest(self, repository: str, reference: str) -> Manifest:
        url = self._manifest_url(repository, reference)
        response = self._request("GET", url, scope=_pull(repository), headers={"Accept": _ACCEPT})
        with _closing(response):
            if response.status_code == 404:
                raise self._not_found(response, repository, reference, "image")
            if response.status_code != 200:
                raise self._failure(
                    response, f"reading the manifest {self._display_name(repository, reference)}"
                )
            raw = response.content
            content_type = response.headers.get("Content-Type")
            header: str | None = response.headers.get("Docker-Content-Digest")
        pinned = reference if _is_digest(reference) else None
        try:
            manifest = Manifest.from_bytes(raw, content_type, digest=pinned)
        except RegistryProtocolError as exc:
            raise RegistryProtocolError(
                f"registry {self.registry}, {self._display_name(repository, reference)}: {exc}",
                registry=self.registry,
            ) from None
        if header and _same_algorithm(header, manifest.digest) and header != manifest.digest:
            raise RegistryProtocolError(
                f"registry {self.registry} sent {self._display_name(repository, reference)} "
                f"as {header}, but its bytes hash to {manifest.digest}",
                registry=self.registry,
            )
        return manifest

    def _manifest_exists(self, repository: str, digest: str) -> bool:
        url = self._manifest_url(repository, digest)
        response = self._request("HEAD", url, scope=_pull(repository), headers={"Accept": _ACCEPT})
        with _closing(response):
            if response.status_code == 200:
                return True
            if response.status_code == 404:
                return False
            raise self._failure(response, f"looking up manifest {digest} in {repository}")

    # -- HTTP: retries ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        *,
        scope: str | None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | httpx.QueryParams | None = None,
        content: bytes | Iterator[bytes] | None = None,
        stream: bool = False,
        attempts: int | None = None,
    ) -> httpx.Response:
        """Send one request, authenticating as needed and retrying transient failures.

        ``scope`` is the token scope the request needs (``None``: send no credentials, e.g. to
        a token service). Returns any response that is not a transient failure; raises
        :class:`RegistryUnavailable` when every attempt failed.
        """
        total = self._retries + 1 if attempts is None else attempts
        last_error = ""
        delay = 0.0
        for attempt in range(total):
            if attempt:
                _sleep(delay)
            try:
                response = self._send_authenticated(
                    method, url, scope, headers, params, content, stream
                )
            except httpx.UnsupportedProtocol as exc:
                raise RegistryError(
                    f"cannot reach registry {self.registry} at {url}: {exc}",
                    registry=self.registry,
                ) from None
            except httpx.TransportError as exc:
                last_error = f"{method} {httpx.URL(url).path}: {type(exc).__name__}: {exc}"
                delay = self._delay(attempt, None)
                continue
            if response.status_code in _TRANSIENT_STATUS:
                last_error = (
                    f"{method} {httpx.URL(url).path}: HTTP {response.status_code} "
                    f"{response.reason_phrase}"
                )
                delay = self._delay(attempt, response.headers.get("Retry-After"))
                response.close()
                continue
            return response
        raise self._unavailable(total, last_error)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self._backoff * 2.0**attempt, _MAX_BACKOFF)
        asked = _parse_retry_after(retry_after)
        if asked is not None:
            delay = max(delay, min(asked, _MAX_RETRY_AFTER))
        return delay

    def _unavailable(self, attempts: int, last_error: str) -> RegistryUnavailable:
        hint = ""
        if "SSL" in last_error or "certificate" in last_error.lower():
            hint = " If the registry speaks plain HTTP, set the scheme to http."
        noun = "attempt" if attempts == 1 else "attempts"
        return RegistryUnavailable(
            f"registry {self.registry} ({self.base_url}) is unavailable: {attempts} {noun} "
            f"failed, the last with {last_error}. Check that the registry is running and "
            f"reachable from this machine.{hint}",
            registry=self.registry,
            attempts=attempts,
            last_error=last_error,
        )

    # -- HTTP: authentication --------------------------------------------------------------------

    def _send_authenticated(
        self,
        method: str,
        url: str,
        scope: str | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | httpx.QueryParams | None,
        content: bytes | Iterator[bytes] | None,
        stream: bool,
    ) -> httpx.Response:
        def send(authorization: str | None) -> httpx.Response:
            all_headers = dict(headers or {})
            if authorization is not None:
                all_headers["Authorization"] = authorization
            # Merge the parameters into the URL's own query: httpx would replace it, and an upload
            # location carries its state there.
            target = httpx.URL(url).copy_merge_params(params) if params else httpx.URL(url)
            request = self._client.build_request(
                method, target, headers=all_headers, content=content
            )
            return self._client.send(request, stream=stream)

        if scope is None:
            return send(None)
        sent = self._authorization(scope)
        response = send(sent)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        _discard(response)
        if content is not None and not isinstance(content, bytes):
            raise self._unauthorized(f"asked for credentials in the middle of {method} upload")
        self._authenticate(challenge, scope, sent, method, url)
        response = send(self._authorization(scope))
        if response.status_code == 401:
            _discard(response)
            where = f"HTTP 401 on {method} {httpx.URL(url).path}"
            if self._has_credentials:
                raise self._unauthorized(f"refused the credentials ({where})")
            raise self._unauthorized(f"requires a login ({where}) and none was given")
        return response

    def _authorization(self, scope: str) -> str | None:
        token = self._tokens.get(scope)
        if token is not None:
            return f"Bearer {token}"
        if self._use_basic:
            return self._basic_header()
        return None

    def _basic_header(self) -> str:
        pair = f"{self.username or ''}:{self._password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    @property
    def _has_credentials(self) -> bool:
        return self.username is not None or self._password is not None

    def _authenticate(
        self, challenge: str, scope: str, sent: str | None, method: str, url: str
    ) -> None:
        """Act on a 401's ``WWW-Authenticate`` challenge so the request can be sent again."""
        scheme, params = _parse_challenge(challenge)
        where = f"HTTP 401 on {method} {httpx.URL(url).path}"
        if scheme == "basic":
            if not self._has_credentials:
                raise self._unauthorized(f"requires a login ({where}) and none was given")
            if sent is not None and sent.startswith("Basic "):
                raise self._unauthorized(f"refused the credentials ({where})")
            self._use_basic = True
            return
        if scheme == "bearer":
            realm = params.get("realm")
            if not realm:
                raise RegistryProtocolError(
                    f"registry {self.registry} asked for a bearer token without a realm ({where})",
                    registry=self.registry,
                )
            self._tokens[scope] = self._fetch_token(
                realm, params.get("service"), params.get("scope") or scope
            )
            return
        raise self._unauthorized(
            f"asks for authentication scheme {scheme or '(none)'!r}, which is not supported "
            f"({where})"
        )

    def _fetch_token(self, realm: str, service: str | None, scope: str) -> str:
        query = httpx.QueryParams()
        if service:
            query = query.add("service", service)
        for item in scope.split():
            query = query.add("scope", item)
        headers = {"Authorization": self._basic_header()} if self._has_credentials else {}
        response = self._request("GET", realm, scope=None, params=query, headers=headers)
        with _closing(response):
            if response.status_code in (401, 403):
                raise self._unauthorized(
                    f"'s token service ({httpx.URL(realm).host}) refused the credentials "
                    f"(HTTP {response.status_code})"
                )
            if response.status_code != 200:
                raise RegistryProtocolError(
                    f"token service {realm} of registry {self.registry} answered HTTP "
                    f"{response.status_code}",
                    registry=self.registry,
                )
            document = _json_object(response, self.registry)
        token = document.get("token") or document.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryProtocolError(
                f"token service {realm} of registry {self.registry} returned no token",
                registry=self.registry,
            )
        return token

    def _unauthorized(self, what: str, *, denied: bool = False) -> Unauthorized:
        separator = "" if what.startswith("'") else " "
        if self._has_credentials:
            advice = f"check the connection's login/password (login {self.username!r})"
            if denied:
                advice += " and that this login may read and write the repository"
        else:
            advice = "check the connection's login/password: set them for this registry"
        return Unauthorized(
            f"registry {self.registry}{separator}{what}: {advice}", registry=self.registry
        )

    # -- errors ----------------------------------------------------------------------------------

    def _check_ref(self, ref: ImageRef) -> None:
        if _normalise_registry(ref.registry) != self.registry:
            raise InvalidReference(
                str(ref),
                f"it lives in registry {ref.registry}, but this client talks to {self.registry}",
            )

    def _display_name(self, repository: str, reference: str | None) -> str:
        name = f"{self.registry}/{repository}"
        if reference is None:
            return name
        return f"{name}@{reference}" if _is_digest(reference) else f"{name}:{reference}"

    def _not_found(
        self, response: httpx.Response, repository: str, reference: str | None, kind: str
    ) -> ImageNotFound:
        where = self._display_name(repository, reference)
        detail = _error_text(response)
        detail = f" ({detail})" if detail else ""
        if kind == "repository":
            advice = "check the repository name and that an image was pushed to it"
        elif kind == "blob":
            advice = "check that the image was pushed completely to this registry"
        else:
            advice = "check that this tag or digest was pushed to this registry"
        return ImageNotFound(
            f"{kind} {where} not found in registry {self.registry}{detail}: {advice}",
            registry=self.registry,
            reference=where,
        )

    def _failure(self, response: httpx.Response, doing: str) -> RegistryError:
        status = response.status_code
        detail = _error_text(response)
        detail = f": {detail}" if detail else ""
        if status == 403:
            return self._unauthorized(f"denied {doing} (HTTP 403{detail})", denied=True)
        if status == 401:
            return self._unauthorized(f"refused {doing} (HTTP 401{detail})")
        return RegistryProtocolError(
            f"registry {self.registry} answered HTTP {status} {response.reason_phrase} when "
            f"{doing}{detail}",
            registry=self.registry,
        )


# -- helpers ---------------------------------------------------------------------------------------


def _human_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def _no_log(message: str) -> None:
    """The default ``log``: say nothing."""


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _delete(repository: str) -> str:
    return f"repository:{repository}:delete"


def _same_algorithm(digest: str, other: str) -> bool:
    return digest.split(":", 1)[0] == other.split(":", 1)[0]


def _is_digest(reference: str) -> bool:
    return ":" in reference


def _normalise_registry(registry: str) -> str:
    """``host[:port]`` as :class:`ImageRef` writes it (``index.docker.io`` -> ``docker.io``)."""
    return ImageRef(registry, "probe").registry


def _is_loopback(registry: str) -> bool:
    bracketed = registry.startswith("[")
    host = registry[1 : registry.find("]")] if bracketed else registry.split(":", 1)[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ``("bearer", {"realm": ..., ...})``."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for key, value in _CHALLENGE_PARAM.findall(rest):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[key.lower()] = value
    return scheme.lower(), params


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def _pick_platform(children: list[Descriptor]) -> Descriptor | None:
    """The linux/amd64 child of an index, else its first real (not attestation) platform."""
    real = [c for c in children if (c.platform or {}).get("os") not in (None, "unknown")]
    for child in real:
        platform = child.platform or {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return child
    if real:
        return real[0]
    return children[0] if children else None


@contextmanager
def _closing(response: httpx.Response) -> Iterator[httpx.Response]:
    try:
        yield response
    finally:
        response.close()


def _discard(response: httpx.Response) -> None:
    try:
        response.read()
    except httpx.HTTPError:
        pass
    finally:
        response.close()


def _json_object(response: httpx.Response, registry: str) -> dict[str, Any]:
    try:
        document = response.json()
    except (UnicodeDecodeError, json.JSONDecodeError):
        document = None
    if not isinstance(document, dict):
        raise RegistryProtocolError(
            f"registry {registry} answered {response.request.method} "
            f"{response.request.url.path} with something that is not a JSON object",
            registry=registry,
        )
    return document


def _registry_errors(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        if not response.is_stream_consumed:
            response.read()
        document = json.loads(response.content) if response.content else None
    except (httpx.HTTPError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    if not isinstance(document, dict) or not isinstance(document.get("errors"), list):
        return []
    return [error for error in document["errors"] if isinstance(error, dict)]


def _error_codes(response: httpx.Response) -> set[str]:
    return {str(error.get("code", "")) for error in _registry_errors(response)}


def _error_text(response: httpx.Response) -> str:
    """The registry's own error codes and messages, e.g. ``MANIFEST_UNKNOWN: manifest unknown``."""
    parts = []
    for error in _registry_errors(response):
        code = error.get("code", "")
        message = error.get("message", "")
        parts.append(f"{code}: {message}" if code and message else str(code or message))
    return "; ".join(part for part in parts if part)
