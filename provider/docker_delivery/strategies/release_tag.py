"""The environment tag follows what serves: ``<repository>:<environment>`` names the release that
passed its deployment and its checks there, and nothing else.

A pipeline stage moves the tag only once the stage's deployment and verification have passed,
under the service's deployment lock (no other delivery is changing what runs meanwhile), and only
if that release still serves there: a release that failed its health gate, or a delivery that lost
the lock to another one, never moves it. When another delivery has replaced the release since, the
tag is left for that delivery (:class:`Superseded`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from docker_delivery.errors import Superseded as Superseded
from docker_delivery.images.promotion import PromotionResult, TagStore, promote
from docker_delivery.images.ref import ImageRef
from docker_delivery.strategies.state import serving_digest
from docker_delivery.strategies.wiring import locked

if TYPE_CHECKING:
    import docker


def promote_serving(
    client: docker.DockerClient,
    store: TagStore,
    image: ImageRef,
    environment: str,
    *,
    service: str,
    port: int,
    owner: str,
    lock_wait: float = 0.0,
    log: Callable[[str], None] = print,
    **promotion: Any,
) -> PromotionResult:
    """Move ``environment``'s tag to ``image`` (:func:`~docker_delivery.images.promotion.
    promote`, with ``promotion``'s arguments) under ``service``'s deployment lock, if ``image``
    is what serves there; :class:`Superseded` (nothing moved) otherwise."""
    image = image.require_pinned()
    with locked(client, service, environment, owner, str(image), lock_wait, log):
        serving = serving_digest(client, service, environment, port=port)
        if serving != image.digest:
            raise Superseded(
                f"{service}/{environment} serves {serving or 'nothing'}, not {image.digest}: "
                f"another delivery replaced it since, so the {environment} tag stays where it is"
            )
        return promote(store, image, environment, log=log, **promotion)
