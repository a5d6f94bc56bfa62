"""Promotion rules on an in-memory tag store (the registry itself is exercised in integration)."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from docker_delivery.errors import ImageNotFound, InvalidReference
from docker_delivery.images.promotion import PromotionRefused, promote
from docker_delivery.images.ref import ImageRef

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
REPO = ImageRef.parse("127.0.0.1:5000/shop/api")


class MemoryStore:
    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.digests = {A: {"org.opencontainers.image.revision": "c0ffee"}, B: {}}
        self.writes: list[str] = []

    def resolve(self, ref: ImageRef) -> str:
        found = ref.digest if ref.digest else self.tags.get(str(ref.tag))
        if found not in self.digests:
            raise ImageNotFound(f"{ref} not found")
        return str(found)

    def tag(self, pinned: ImageRef, tag: str) -> ImageRef:
        self.tags[tag] = str(pinned.digest)
        self.writes.append(tag)
        return pinned.with_tag(tag).with_digest(str(pinned.digest))

    def list_tags(self, ref: ImageRef) -> list[str]:
        return list(self.tags)

    def image_labels(self, ref: ImageRef) -> dict[str, str]:
        return self.digests[self.resolve(ref)]

    def check_movable(self, ref: ImageRef, digest: str) -> None:
        pass


def clock():  # type: ignore[no-untyped-def]
    ticks = itertools.count()
    return lambda: (
        dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=next(ticks))
    )


def test_promotion_writes_audit_tag_then_moves_environment_tag() -> None:
    store = MemoryStore()
    result = promote(store, REPO.with_digest(A), "staging", now=clock(), log=lambda _: None)
    assert store.writes == ["staging-20261126T120100Z", "staging"]
    assert store.tags["staging"] == A
    assert result.previous_digest is None
    assert result.revision == "c0ffee"
    assert not result.already_promoted


def test_retry_finds_the_previous_digest_in_the_audit_history() -> None:
    store, now = MemoryStore(), clock()
    promote(store, REPO.with_digest(B), "prod", now=now, log=lambda _: None)
    first = promote(store, REPO.with_digest(A), "prod", now=now, log=lambda _: None)
    retry = promote(store, REPO.with_digest(A), "prod", now=now, log=lambda _: None)
    assert first.previous_digest == B
    assert retry.already_promoted
    assert retry.previous_digest == B
    assert len(store.writes) == 4  # the retry wrote nothing


def test_require_tag_must_point_at_the_same_digest() -> None:
    store = MemoryStore()
    with pytest.raises(PromotionRefused, match="does not exist"):
        promote(store, REPO.with_digest(A), "prod", require_tag="staging", log=lambda _: None)
    store.tags["staging"] = B
    with pytest.raises(PromotionRefused, match=f"points at {B}, not {A}"):
        promote(store, REPO.with_digest(A), "prod", require_tag="staging", log=lambda _: None)
    assert store.writes == []


def test_unpinned_unknown_and_bad_names_change_nothing() -> None:
    store = MemoryStore()
    with pytest.raises(InvalidReference, match="not pinned"):
        promote(store, REPO.with_tag("v1"), "prod", log=lambda _: None)
    with pytest.raises(ImageNotFound):
        promote(store, REPO.with_digest("sha256:" + "c" * 64), "prod", log=lambda _: None)
    with pytest.raises(InvalidReference):
        promote(store, REPO.with_digest(A), "Prod!", log=lambda _: None)
    assert store.writes == []
