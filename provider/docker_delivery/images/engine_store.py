"""EngineImageStore: promotion through one Docker Engine's local tags, for a host with no registry.

It offers what promotion needs from a registry (resolve, tag, list tags, read labels) with the
engine's image store underneath: a tag moves to an image ID, nothing is built or copied. A pinned
reference here carries the image ID as its digest (``repository:tag@sha256:<image id>``), or a
registry digest the engine knows from a pull.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from docker_delivery.errors import ImageNotFound
from docker_delivery.images.ref import ImageRef

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image


class EngineImageStore:
    def __init__(self, client: docker.DockerClient, *, log: Callable[[str], None] = print) -> None:
        self._client = client
        self._log = log

    def _image(self, ref: ImageRef) -> Image:
        import docker.errors

        names = [ref.digest] if ref.digest else [str(ref)]
        if ref.digest:
            names.append(f"{ref.name}@{ref.digest}")
        for name in names:
            try:
                return self._client.images.get(name)
            except docker.errors.ImageNotFound:
                continue
        raise ImageNotFound(
            f"{ref} is not in the engine's image store: build it on this engine first "
            "(or pull it) before promoting"
        )

    def resolve(self, ref: ImageRef) -> str:
        """The image ID that ``ref`` (tag or digest) names in this engine."""
        return str(self._image(ref).id)

    def check_movable(self, ref: ImageRef, digest: str) -> None:
        """An engine's local tags always move."""

    def tag(self, pinned: ImageRef, tag: str) -> ImageRef:
        pinned = pinned.require_pinned()
        image = self._image(pinned)
        target = pinned.with_tag(tag)
        image.tag(pinned.name, tag)
        self._log(f"tagged {target.name}:{tag} -> {image.id} (engine)")
        return target.with_digest(pinned.digest or image.id)

    def list_tags(self, ref: ImageRef) -> list[str]:
        tags = set()
        for image in self._client.images.list(name=ref.familiar_name):
            for name in image.tags:
                found = ImageRef.parse(name)
                if found.name == ref.name and found.tag:
                    tags.add(found.tag)
        return sorted(tags)

    def image_labels(self, ref: ImageRef) -> dict[str, str]:
        return dict(self._image(ref).labels or {})
