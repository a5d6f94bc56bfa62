"""Test helper: a variant of the demo app built FROM one of its releases (a fault baked in, a
migration removed), pushed to the bed's registry, pinned by digest."""

from __future__ import annotations

import io
from typing import Any


def demo_variant(bed: Any, docker_client: Any, base: str, tag: str, *lines: str) -> str:
    """``base`` with the Dockerfile ``lines`` on top, as ``dd-test/demo-app:<tag>``; its
    digest-pinned reference."""
    from docker_delivery.images.ref import ImageRef
    from docker_delivery.images.registry import RegistryClient

    repo = f"{bed.registry}/dd-test/demo-app"
    dockerfile = "\n".join([f"FROM {base}", *lines, f"LABEL dd-test={tag}", ""])
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{repo}:{tag}")
    docker_client.images.push(repo, tag=tag)
    ref = ImageRef.parse(f"{repo}:{tag}")
    with RegistryClient(bed.registry) as registry:
        return str(ref.with_digest(registry.resolve(ref)))
