"""Promotion: an environment tag moves to a digest. Nothing is rebuilt and no layer is copied.

Each promotion also writes an immutable audit tag ``<env>-<UTC timestamp>``, written *before* the
environment tag moves, so the audit tags are the history of the environment: a retried promotion
that finds the environment tag already on its digest reads the previous digest from that history
instead of from memory.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from docker_delivery.errors import ImageNotFound
from docker_delivery.errors import PromotionRefused as PromotionRefused
from docker_delivery.images.ref import ImageRef

AUDIT_STAMP = "%Y%m%dT%H%M%SZ"
REVISION_LABEL = "org.opencontainers.image.revision"


class TagStore(Protocol):
    """What promotion needs: a registry (RegistryClient) or one engine (EngineImageStore)."""

    def resolve(self, ref: ImageRef) -> str: ...
    def tag(self, pinned: ImageRef, tag: str) -> ImageRef: ...
    def list_tags(self, ref: ImageRef) -> list[str]: ...
    def image_labels(self, ref: ImageRef) -> dict[str, str]: ...
    def check_movable(self, ref: ImageRef, digest: str) -> None: ...


@dataclass(frozen=True)
class PromotionResult:
    image: ImageRef  # <target repository>:<environment>@<digest>
    environment: str
    digest: str
    previous_digest: str | None
    audit_tag: str | None
    revision: str | None
    already_promoted: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": str(self.image),
            "environment": self.environment,
            "digest": self.digest,
            "previous_digest": self.previous_digest,
            "audit_tag": self.audit_tag,
            "revision": self.revision,
            "already_promoted": self.already_promoted,
        }


def current_digest(store: TagStore, ref: ImageRef) -> str | None:
    """The digest ``ref``'s tag points at now, or None when the tag does not exist."""
    try:
        return store.resolve(ref)
    except ImageNotFound:
        return None


def promote(
    store: TagStore,
    image: ImageRef,
    environment: str,
    *,
    require_tag: str | None = None,
    target: ImageRef | None = None,
    target_store: TagStore | None = None,
    copy: Callable[[ImageRef, ImageRef], ImageRef] | None = None,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    log: Callable[[str], None] = print,
) -> PromotionResult:
    """Move ``environment``'s tag to ``image``'s digest (in ``target``'s repository if given).

    ``copy(src, dst)`` brings the image into another repository or registry first; with a
    registry it mounts or streams blobs that are missing, and never rebuilds.
    """
    image = image.require_pinned()
    digest = str(image.digest)
    dest = (target or image).without_tag()
    dest.with_tag(_audit_tag(environment, now()))  # validates the tag names before any change
    dest_store = target_store or store

    if require_tag is not None:
        require_promoted(store, image, require_tag)
    store.resolve(image)  # the digest must exist: ImageNotFound otherwise, before any change
    revision = store.image_labels(image).get(REVISION_LABEL)

    if dest.name != image.without_tag().name:
        if copy is None:
            raise PromotionRefused(f"promotion into {dest.name} needs a copy function")
        copy(image, dest.with_digest(digest))

    env_ref = dest.with_tag(environment)
    dest_store.check_movable(env_ref, digest)  # e.g. an immutable tag: refused before any change
    previous = current_digest(dest_store, env_ref)
    if previous == digest:
        earlier = _previous_from_history(dest_store, dest, environment, digest)
        log(f"{env_ref} already points at {digest}: nothing to move")
        return PromotionResult(
            env_ref.with_digest(digest), environment, digest, earlier, None, revision, True
        )
    audit = _audit_tag(environment, now())
    dest_store.tag(dest.with_digest(digest), audit)
    dest_store.tag(dest.with_digest(digest), environment)
    log(f"promoted {env_ref}: {previous or '(none)'} -> {digest} (audit tag {audit})")
    return PromotionResult(
        env_ref.with_digest(digest), environment, digest, previous, audit, revision, False
    )


def require_promoted(store: TagStore, image: ImageRef, tag: str) -> str:
    """PromotionRefused unless ``tag`` of ``image``'s repository points at its digest: the
    release has been through that environment (its tag names what passed there). Returns the
    digest; nothing moves."""
    image = image.require_pinned()
    digest = str(image.digest)
    required = current_digest(store, image.with_tag(tag))
    if required is None:
        raise PromotionRefused(
            f"{image.without_tag().name}:{tag} does not exist, so {digest} has not been "
            f"through {tag}: deliver it to {tag} first"
        )
    if required != digest:
        raise PromotionRefused(
            f"{image.without_tag().name}:{tag} points at {required}, not {digest}: "
            f"deliver {digest} to {tag} first (no skipping an environment)"
        )
    return digest


def _audit_tag(environment: str, when: dt.datetime) -> str:
    return f"{environment}-{when.astimezone(dt.timezone.utc).strftime(AUDIT_STAMP)}"


def _previous_from_history(
    store: TagStore, repo: ImageRef, environment: str, digest: str, *, limit: int = 20
) -> str | None:
    """The digest the environment had before ``digest``, read from its audit tags."""
    pattern = re.compile(rf"^{re.escape(environment)}-\d{{8}}T\d{{6}}Z$")
    audits = sorted((t for t in store.list_tags(repo) if pattern.match(t)), reverse=True)
    seen_ours = False
    for tag in audits[:limit]:
        found = current_digest(store, repo.with_tag(tag))
        if found == digest:
            seen_ours = True
        elif seen_ours and found is not None:
            return found
    return None
