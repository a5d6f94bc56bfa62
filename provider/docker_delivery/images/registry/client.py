"""RegistryClient: what delivery needs of one registry's OCI Distribution API (v2), and nothing
more: resolve a tag to its digest, tag a digest (promotion: the manifest read by digest and
written back under the tag, byte for byte, so no blob moves), copy an image into another
repository or registry (:mod:`.copy`), list tags, read an image's labels, and look up or delete
what tests leave behind. Requests go through :mod:`.http` (authentication, retries).

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Final

import httpx

from docker_delivery.errors import ImageNotFound, InvalidReference, RegistryProtocolError
from docker_delivery.images.ref import ImageRef
from docker_delivery.images.registry.copy import CHUNK, copy_content
from docker_delivery.images.registry.http import (
    RegistryAuth,
    RegistryHttp,
    closing,
    delete,
    error_codes,
    error_text,
    json_object,
    pull,
    push,
)
from docker_delivery.images.registry.manifest import ACCEPT, Manifest, pick_platform

_MAX_CONFIG_BYTES: Final = 16 * 1024 * 1024
"""Largest image config blob :meth:`RegistryClient.image_labels` reads into memory."""
_DOCKER_HUB: Final = "docker.io"
_DOCKER_HUB_API: Final = "registry-1.docker.io"


class RegistryClient:
    """A client of ONE registry (``host[:port]``), e.g. ``RegistryClient("localhost:5000")``.

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
        credentials: Callable[[], tuple[str, str]] | None = None,
    ) -> None:
        self.registry = _normalise_registry(registry)
        self.base_url = api_base(self.registry, scheme)
        self.username = username
        self.log: Callable[[str], None] = log if log is not None else _no_log
        self.http = RegistryHttp(
            self.registry,
            self.base_url,
            RegistryAuth(self.registry, username, password, credentials),
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            transport=transport,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

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
        response = self.http.request(
            "HEAD", url, scope=pull(ref.repository), headers={"Accept": ACCEPT}
        )
        with closing(response):
            if response.status_code == 404:
                raise self.http.not_found(
                    response, self._display_name(ref.repository, reference), "image"
                )
            if response.status_code != 200:
                raise self.http.failure(response, f"resolving {ref}")
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
        return self.fetch_manifest(ref.repository, reference).digest

    def get_manifest(self, ref: ImageRef) -> Manifest:
        """The manifest ``ref`` names (by digest when pinned, else by tag), verified by digest."""
        self._check_ref(ref)
        return self.fetch_manifest(ref.repository, ref.digest or ref.tag_or_latest)

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
            response = self.http.request("GET", url, scope=pull(repository), params=params)
            with closing(response):
                if response.status_code == 404:
                    raise self.http.not_found(
                        response, self._display_name(repository, None), "repository"
                    )
                if response.status_code != 200:
                    raise self.http.failure(response, f"listing the tags of {repository}")
                page = json_object(response, self.registry).get("tags")
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

    def check_movable(self, ref: ImageRef, digest: str) -> None:
        """Tags of the OCI Distribution API always move (the ECR client reads its rules)."""

    def image_labels(self, ref: ImageRef) -> dict[str, str]:
        """The labels of the image ``ref`` names (of its linux/amd64 image for an index)."""
        self._check_ref(ref)
        manifest = self.fetch_manifest(ref.repository, ref.digest or ref.tag_or_latest)
        if manifest.is_index:
            child = pick_platform(manifest.child_descriptors)
            if child is None:
                return {}
            manifest = self.fetch_manifest(ref.repository, child.digest)
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
        response = self.http.request("HEAD", url, scope=pull(repository))
        with closing(response):
            if response.status_code == 200:
                return True
            if response.status_code == 404:
                return False
            raise self.http.failure(response, f"looking up blob {digest} in {repository}")

    # -- writing ---------------------------------------------------------------------------------

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        """Store ``manifest`` in ``repository`` under ``reference`` (a tag or its digest).

        Returns the digest, checked against the registry's ``Docker-Content-Digest``.
        """
        url = self._manifest_url(repository, reference)
        response = self.http.request(
            "PUT",
            url,
            scope=push(repository),
            headers={"Content-Type": manifest.media_type},
            content=manifest.raw,
        )
        with closing(response):
            if response.status_code not in (200, 201, 202):
                where = self._display_name(repository, reference)
                codes = error_codes(response)
                if "MANIFEST_BLOB_UNKNOWN" in codes or "BLOB_UNKNOWN" in codes:
                    raise ImageNotFound(
                        f"registry {self.registry} refused the manifest {manifest.digest} for "
                        f"{where}: it references blobs {repository} does not hold "
                        f"({error_text(response)}); copy the image with its blobs first",
                        registry=self.registry,
                        reference=where,
                    )
                raise self.http.failure(response, f"writing the manifest {where}")
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
        manifest = self.fetch_manifest(pinned.repository, digest)
        self.put_manifest(pinned.repository, tag, manifest)
        self.log(f"tagged {target.name}:{tag} -> {digest}")
        return target

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete the manifest ``digest`` (and with it every tag pointing at it)."""
        url = self._manifest_url(repository, digest)
        response = self.http.request("DELETE", url, scope=delete(repository))
        with closing(response):
            if response.status_code == 404:
                raise self.http.not_found(
                    response, self._display_name(repository, digest), "manifest"
                )
            if response.status_code == 405:
                raise RegistryProtocolError(
                    f"registry {self.registry} does not allow deletes "
                    f"({error_text(response)}): enable storage.delete in its configuration",
                    registry=self.registry,
                )
            if response.status_code not in (200, 202):
                raise self.http.failure(response, f"deleting {repository}@{digest}")
        self.log(f"deleted {self.registry}/{repository}@{digest}")

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
        manifest = source_client.fetch_manifest(src.repository, digest)
        copy_content(self, source_client, src.repository, dst.repository, manifest)
        self.put_manifest(dst.repository, dst.tag or digest, manifest)
        result = ImageRef(self.registry, dst.repository, dst.tag, digest)
        self.log(f"copied {src} -> {result}")
        return result

    @contextmanager
    def open_blob(self, repository: str, digest: str) -> Iterator[httpx.Response]:
        url = f"{self.base_url}/v2/{repository}/blobs/{digest}"
        response = self.http.request("GET", url, scope=pull(repository), stream=True)
        try:
            if response.status_code == 404:
                response.read()
                raise self.http.not_found(response, self._display_name(repository, digest), "blob")
            if response.status_code != 200:
                response.read()
                raise self.http.failure(response, f"reading blob {digest} from {repository}")
            yield response
        finally:
            response.close()

    def _read_blob(self, repository: str, digest: str, *, limit: int) -> bytes:
        with self.open_blob(repository, digest) as response:
            hasher = hashlib.new(digest.split(":", 1)[0])
            chunks: list[bytes] = []
            total = 0
            for chunk in response.iter_bytes(CHUNK):
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

    # -- manifests and blobs, for copy ----------------------------------------------------------

    def _manifest_url(self, repository: str, reference: str) -> str:
        return f"{self.base_url}/v2/{repository}/manifests/{reference}"

    def fetch_manifest(self, repository: str, reference: str) -> Manifest:
        url = self._manifest_url(repository, reference)
        response = self.http.request("GET", url, scope=pull(repository), headers={"Accept": ACCEPT})
        with closing(response):
            if response.status_code == 404:
                raise self.http.not_found(
                    response, self._display_name(repository, reference), "image"
                )
            if response.status_code != 200:
                raise self.http.failure(
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

    def manifest_exists(self, repository: str, digest: str) -> bool:
        url = self._manifest_url(repository, digest)
        response = self.http.request(
            "HEAD", url, scope=pull(repository), headers={"Accept": ACCEPT}
        )
        with closing(response):
            if response.status_code == 200:
                return True
            if response.status_code == 404:
                return False
            raise self.http.failure(response, f"looking up manifest {digest} in {repository}")

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


def _no_log(message: str) -> None:
    """The default ``log``: say nothing."""


def _same_algorithm(digest: str, other: str) -> bool:
    return digest.split(":", 1)[0] == other.split(":", 1)[0]


def _is_digest(reference: str) -> bool:
    return ":" in reference


def api_base(registry: str, scheme: str | None = None) -> str:
    """Where a registry's API answers: ``http`` for loopback registries, ``https`` otherwise
    (unless ``scheme`` says); Docker Hub's is ``registry-1.docker.io``."""
    registry = _normalise_registry(registry)
    if scheme is None:
        scheme = "http" if _is_loopback(registry) else "https"
    if scheme not in ("http", "https"):
        raise ValueError(f"scheme must be 'http' or 'https', got {scheme!r}")
    return f"{scheme}://{_DOCKER_HUB_API if registry == _DOCKER_HUB else registry}"


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
