"""Copying an image into another repository: within one registry its blobs are mounted from the
source repository (no data moves), across registries they are streamed from one to the other,
never held in memory; the children of an index first; blobs already there are skipped.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import httpx

from docker_delivery.errors import RegistryProtocolError, RegistryUnavailable
from docker_delivery.images.registry import http
from docker_delivery.images.registry.http import closing, pull, push
from docker_delivery.images.registry.manifest import Descriptor, Manifest

if TYPE_CHECKING:
    from docker_delivery.images.registry.client import RegistryClient

CHUNK: Final = 1024 * 1024
"""Bytes read from a source blob at a time when streaming it to another registry."""


def human_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def copy_content(
    dest: RegistryClient,
    source: RegistryClient,
    src_repository: str,
    dst_repository: str,
    manifest: Manifest,
) -> None:
    """Copy what ``manifest`` references (blobs; child manifests of an index)."""
    for child in manifest.child_descriptors:
        if dest.manifest_exists(dst_repository, child.digest):
            continue
        child_manifest = source.fetch_manifest(src_repository, child.digest)
        copy_content(dest, source, src_repository, dst_repository, child_manifest)
        dest.put_manifest(dst_repository, child.digest, child_manifest)
    for blob in manifest.blob_descriptors:
        if blob.is_foreign:
            continue
        _copy_blob(dest, source, src_repository, dst_repository, blob)


def _copy_blob(
    dest: RegistryClient,
    source: RegistryClient,
    src_repository: str,
    dst_repository: str,
    blob: Descriptor,
) -> None:
    if dest.blob_exists(dst_repository, blob.digest):
        return
    location: str | None = None
    if source.base_url == dest.base_url:  # one registry: mounted, no data moves
        location = _start_upload(dest, dst_repository, mount=blob.digest, source=src_repository)
        if location is None:
            dest.log(f"mounted blob {blob.digest} from {src_repository} into {dst_repository}")
            return
    _stream_blob(dest, source, src_repository, dst_repository, blob, location)
    size = f" ({human_size(blob.size)})" if blob.size is not None else ""
    dest.log(
        f"copied blob {blob.digest}{size} from {source.registry}/{src_repository} "
        f"into {dest.registry}/{dst_repository}"
    )


def _start_upload(
    dest: RegistryClient, repository: str, *, mount: str | None = None, source: str | None = None
) -> str | None:
    """Open a blob upload; with ``mount``, try a cross-repository mount first.

    Returns None when the blob was mounted, else the upload's location.
    """
    url = f"{dest.base_url}/v2/{repository}/blobs/uploads/"
    params: dict[str, str] = {}
    scope = push(repository)
    if mount is not None and source is not None:
        params = {"mount": mount, "from": source}
        scope = f"{scope} {pull(source)}"
    response = dest.http.request("POST", url, scope=scope, params=params)
    with closing(response):
        if response.status_code == 201 and mount is not None:
            return None
        if response.status_code != 202:
            raise dest.http.failure(response, f"starting a blob upload to {repository}")
        location = response.headers.get("Location")
    if not location:
        raise RegistryProtocolError(
            f"registry {dest.registry} opened a blob upload without a Location header",
            registry=dest.registry,
        )
    return str(httpx.URL(url).join(location))


def _new_upload(dest: RegistryClient, repository: str) -> str:
    location = _start_upload(dest, repository)
    if location is None:  # only a mount is answered with 201; not asked for here
        raise RegistryProtocolError(
            f"registry {dest.registry} did not open a blob upload to {repository}",
            registry=dest.registry,
        )
    return location


def _stream_blob(
    dest: RegistryClient,
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
    attempts = dest.http.retries + 1
    last_error = ""
    for attempt in range(attempts):
        if attempt:
            http._sleep(dest.http.delay(attempt - 1, None))
        upload = location if location is not None else _new_upload(dest, dst_repository)
        location = None
        with source.open_blob(src_repository, blob.digest) as body:
            length = blob.size if blob.size is not None else body.headers.get("Content-Length")
            headers = {"Content-Type": "application/octet-stream"}
            if length is not None:
                headers["Content-Length"] = str(length)
            try:
                response = dest.http.request(
                    "PUT",
                    upload,
                    scope=push(dst_repository),
                    params={"digest": blob.digest},
                    headers=headers,
                    content=body.iter_bytes(CHUNK),
                    attempts=1,
                )
            except RegistryUnavailable as exc:
                last_error = exc.last_error or str(exc)
                continue
        with closing(response):
            if response.status_code != 201:
                raise dest.http.failure(response, f"uploading blob {blob.digest}")
            header: str | None = response.headers.get("Docker-Content-Digest")
        if header and header != blob.digest:
            raise RegistryProtocolError(
                f"registry {dest.registry} stored blob {blob.digest} as {header}",
                registry=dest.registry,
            )
        return
    raise dest.http.unavailable(attempts, last_error)
