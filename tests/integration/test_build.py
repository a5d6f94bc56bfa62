"""BuildImageOperator's domain on the real engine and registry: built once per commit."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from docker_delivery.images.build import LABEL_REVISION, BuildFailed, BuildSpec, ImageBuilder
from docker_delivery.images.engine_store import EngineImageStore
from docker_delivery.images.promotion import promote
from docker_delivery.images.ref import ImageRef
from docker_delivery.images.registry import RegistryClient


@pytest.fixture
def context(tmp_path: Path, bed) -> Path:  # type: ignore[no-untyped-def]
    (tmp_path / "Dockerfile").write_text(
        f"ARG BASE\nFROM {bed.python_image}\nARG GREETING=hello\n"
        'RUN echo $GREETING > /greeting\nCMD ["cat", "/greeting"]\n'
    )
    return tmp_path


def spec(bed, context: Path, revision: str, **kw) -> BuildSpec:  # type: ignore[no-untyped-def]
    repo = f"{bed.registry}/dd-test/build-{uuid.uuid4().hex[:8]}"
    return BuildSpec(repository=repo, revision=revision, context=str(context), **kw)


def test_build_labels_pushes_and_pins(bed, docker_client, context: Path) -> None:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    s = spec(bed, context, "1" * 40, source="https://example.invalid/app", extra_tags=("latest",))
    with RegistryClient(bed.registry) as registry:
        result = ImageBuilder(docker_client, registry, log=lines.append).build(s)
        assert result.built
        assert result.ref.is_pinned and result.ref.tag == "1" * 40
        assert registry.resolve(s.ref) == result.ref.digest
        assert registry.resolve(s.ref.with_tag("latest")) == result.ref.digest
        labels = registry.image_labels(result.ref)
    assert labels[LABEL_REVISION] == "1" * 40
    assert labels["org.opencontainers.image.source"] == "https://example.invalid/app"
    assert "org.opencontainers.image.created" in labels
    assert any("Step" in line for line in lines), "the build log reaches the log callback"


def test_a_retried_build_builds_nothing(bed, docker_client, context: Path) -> None:  # type: ignore[no-untyped-def]
    s = spec(bed, context, "2" * 40)
    # This build's images only: other tests build theirs meanwhile (they run side by side).
    ours = {"label": f"{LABEL_REVISION}={'2' * 40}"}
    with RegistryClient(bed.registry) as registry:
        first = ImageBuilder(docker_client, registry, log=lambda _: None).build(s)
        images_before = {i.id for i in docker_client.images.list(all=True, filters=ours)}
        lines: list[str] = []
        # The engine forgets the image, as on another worker: the registry still knows it.
        docker_client.images.remove(str(s.ref), force=True)
        second = ImageBuilder(docker_client, registry, log=lines.append).build(s)
    assert not second.built
    assert second.ref == first.ref
    assert any("not building again" in line for line in lines)
    assert not any("Step" in line for line in lines)
    assert images_before  # the filter sees the first build
    assert {i.id for i in docker_client.images.list(all=True, filters=ours)} <= images_before


def test_a_stray_tag_for_another_revision_is_refused(bed, docker_client, context: Path) -> None:  # type: ignore[no-untyped-def]
    s = spec(bed, context, "3" * 40)
    with RegistryClient(bed.registry) as registry:
        built = ImageBuilder(docker_client, registry, log=lambda _: None).build(s)
        registry.tag(built.ref, "4" * 40)  # a tag named after another commit, holding this one
        stray = BuildSpec(repository=s.repository, revision="4" * 40, context=str(context))
        with pytest.raises(BuildFailed, match="remove the stray tag"):
            ImageBuilder(docker_client, registry, log=lambda _: None).build(stray)


def test_a_failing_build_says_why(bed, docker_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "Dockerfile").write_text(f"FROM {bed.python_image}\nRUN exit 7\n")
    s = spec(bed, tmp_path, "5" * 40)
    with RegistryClient(bed.registry) as registry, pytest.raises(BuildFailed, match="7"):
        ImageBuilder(docker_client, registry, log=lambda _: None).build(s)


def test_engine_store_promotes_by_local_tag(bed, docker_client, context: Path) -> None:  # type: ignore[no-untyped-def]
    repo = f"dd-local/app-{uuid.uuid4().hex[:8]}"
    s = BuildSpec(repository=repo, revision="6" * 40, context=str(context), push=False)
    built = ImageBuilder(docker_client, None, log=lambda _: None).build(s)
    again = ImageBuilder(docker_client, None, log=lambda _: None).build(s)
    assert built.built and not again.built and again.ref == built.ref
    store = EngineImageStore(docker_client, log=lambda _: None)
    result = promote(store, built.ref, "staging", log=lambda _: None)
    assert store.resolve(ImageRef.parse(repo).with_tag("staging")) == built.image_id
    assert result.audit_tag and result.audit_tag in store.list_tags(ImageRef.parse(repo))
    assert result.revision == "6" * 40
    for image in docker_client.images.list(name=ImageRef.parse(repo).name):
        docker_client.images.remove(image.id, force=True)
