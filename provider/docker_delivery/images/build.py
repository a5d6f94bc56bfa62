"""Build an image once per commit, label it, push it, and return it pinned by digest.

The build goes through the Docker Engine API (the docker SDK's low-level ``build``), which is the
classic builder: the SDK has no BuildKit session. What makes a build "once" is not the builder but
the check before it: when ``<repository>:<revision>`` already exists, in the registry or in the
engine, with the same ``org.opencontainers.image.revision`` label, nothing is built again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from docker_delivery.errors import BuildFailed as BuildFailed
from docker_delivery.errors import DeliveryError, ImageNotFound
from docker_delivery.images.ref import ImageRef

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image

    from docker_delivery.images.registry import RegistryClient

LABEL_SOURCE = "org.opencontainers.image.source"
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_CREATED = "org.opencontainers.image.created"


@dataclass(frozen=True)
class BuildSpec:
    """What to build. ``repository`` is a name without tag or digest (``registry/path``)."""

    repository: str
    revision: str
    context: str
    dockerfile: str = "Dockerfile"
    source: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    platform: str | None = None
    extra_tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    push: bool = True

    def __post_init__(self) -> None:
        ref = ImageRef.parse(self.repository)
        if ref.tag or ref.digest:
            raise DeliveryError(
                f"repository {self.repository!r} must have no tag or digest: the build tags it "
                "with the commit SHA itself"
            )
        if not self.revision or len(self.revision) > 128 or not self.revision.isalnum():
            raise DeliveryError(
                f"revision {self.revision!r} must be a commit SHA (letters and digits, 1-128)"
            )
        for tag in self.extra_tags:
            ref.with_tag(tag)  # validates

    @property
    def ref(self) -> ImageRef:
        """``<repository>:<revision>``."""
        return ImageRef.parse(self.repository).with_tag(self.revision)


@dataclass(frozen=True)
class BuildResult:
    ref: ImageRef  # pinned: <repository>:<revision>@<digest>
    image_id: str
    built: bool  # False when an image for this revision already existed
    tags: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": str(self.ref),
            "digest": self.ref.digest,
            "image_id": self.image_id,
            "built": self.built,
            "tags": list(self.tags),
        }


class ImageBuilder:
    """Builds through ``client`` (a docker SDK client) and pushes to ``registry`` when given."""

    def __init__(
        self,
        client: docker.DockerClient,
        registry: RegistryClient | None = None,
        *,
        log: Callable[[str], None] = print,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        self._client = client
        self._registry = registry
        self._log = log
        self._clock = clock

    def build(self, spec: BuildSpec) -> BuildResult:
        existing = self._existing(spec)
        if existing is not None:
            return existing
        image_id = self._build(spec)
        return self._finish(spec, image_id, built=True)

    # -- looking where things stand -------------------------------------------------------
    def _existing(self, spec: BuildSpec) -> BuildResult | None:
        ref = spec.ref
        if spec.push and self._registry is not None:
            try:
                revision = self._registry.image_labels(ref).get(LABEL_REVISION)
            except ImageNotFound:
                revision = None
            if revision is not None:
                self._check_revision(ref, revision, spec.revision)
                digest = self._registry.resolve(ref)
                self._log(
                    f"{ref} already exists in the registry with revision {revision} "
                    f"({digest}): not building again"
                )
                for tag in spec.extra_tags:
                    self._registry.tag(ref.with_digest(digest), tag)
                return BuildResult(
                    ref.with_digest(digest), "", built=False, tags=(spec.revision, *spec.extra_tags)
                )
        local = self._local_image(str(ref))
        if local is not None:
            revision = (local.labels or {}).get(LABEL_REVISION)
            self._check_revision(ref, revision, spec.revision)
            self._log(
                f"{ref} already exists in the engine with revision {revision} ({local.id}): "
                "not building again"
            )
            return self._finish(spec, local.id, built=False)
        return None

    def _check_revision(self, ref: ImageRef, found: str | None, wanted: str) -> None:
        if found != wanted:
            raise BuildFailed(
                f"{ref} exists but is labelled {LABEL_REVISION}={found!r}, not {wanted!r}: "
                "a tag named after a commit must hold that commit; remove the stray tag"
            )

    def _local_image(self, name: str) -> Image | None:
        import docker.errors

        try:
            return self._client.images.get(name)
        except docker.errors.ImageNotFound:
            return None

    # -- building and pushing -------------------------------------------------------------
    def _build(self, spec: BuildSpec) -> str:
        labels = {
            **spec.labels,
            LABEL_REVISION: spec.revision,
            LABEL_CREATED: self._clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if spec.source:
            labels[LABEL_SOURCE] = spec.source
        self._log(f"building {spec.ref} from {spec.context} ({spec.dockerfile})")
        stream = self._client.api.build(
            path=spec.context,
            dockerfile=spec.dockerfile,
            tag=str(spec.ref),
            buildargs=dict(spec.build_args),
            target=spec.target,
            platform=spec.platform,
            labels=labels,
            rm=True,
            forcerm=True,
            decode=True,
        )
        image_id = None
        for chunk in _lines(stream, self._log):
            aux = chunk.get("aux")
            if isinstance(aux, dict) and "ID" in aux:
                image_id = aux["ID"]
        if image_id is None:  # the classic builder reports the ID in its last line only
            image_id = self._client.images.get(str(spec.ref)).id
        self._log(f"built {spec.ref} as {image_id}")
        return str(image_id)

    def _finish(self, spec: BuildSpec, image_id: str, *, built: bool) -> BuildResult:
        ref = spec.ref
        image = self._client.images.get(image_id)
        for tag in spec.extra_tags:
            image.tag(ref.name, tag)
        tags = (spec.revision, *spec.extra_tags)
        if not spec.push:
            return BuildResult(ref.with_digest(image_id), image_id, built, tags)
        digest = ""
        for tag in tags:
            digest = self._push(ref.with_tag(tag))
        return BuildResult(ref.with_digest(digest), image_id, built, tags)

    def _push(self, ref: ImageRef) -> str:
        self._log(f"pushing {ref}")
        stream = self._client.api.push(ref.name, tag=ref.tag, stream=True, decode=True)
        digest = None
        for chunk in _lines(stream, self._log, quiet_progress=True):
            aux = chunk.get("aux")
            if isinstance(aux, dict) and "Digest" in aux:
                digest = aux["Digest"]
        if digest is None:
            raise BuildFailed(f"the push of {ref} reported no digest")
        self._log(f"pushed {ref} -> {digest}")
        return str(digest)


def _lines(
    stream: Iterator[dict[str, Any]], log: Callable[[str], None], *, quiet_progress: bool = False
) -> Iterator[dict[str, Any]]:
    """Relays the engine's JSON stream to ``log``; raises BuildFailed on an error line."""
    for chunk in stream:
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            raise BuildFailed(str(detail).strip())
        text = chunk.get("stream")
        if text and text.strip():
            for line in text.rstrip().splitlines():
                log(line)
        elif chunk.get("status") and not (quiet_progress and chunk.get("progressDetail")):
            ident = f"{chunk['id']}: " if chunk.get("id") else ""
            log(f"{ident}{chunk['status']}")
        yield chunk
