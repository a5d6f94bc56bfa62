"""PromoteImageOperator: move an environment tag to a digest; no rebuild, no layer transfer."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from typing import Any

from airflow.sdk import Asset, BaseOperator, Context

from docker_delivery.hooks.engine import engine_client
from docker_delivery.hooks.registry import RegistryHook


def image_asset(repository: str, environment: str) -> Asset:
    """The Airflow Asset of an image in an environment (what a promotion updates)."""
    return Asset(
        name=f"{repository}:{environment}",
        uri=f"x-oci://{repository}/{environment}",
        group="docker-delivery",
    )


class PromoteImageOperator(BaseOperator):
    """Point ``<repository>:<environment>`` at ``image``'s digest and add ``<env>-<UTC stamp>``.

    ``image`` is a digest-pinned reference (usually BuildImageOperator's XCom). With
    ``require_tag`` the promotion is refused unless that tag points at the same digest now.
    ``target_repository`` promotes into another repository or registry (blobs mounted or copied,
    never rebuilt). ``registry=False`` promotes through the engine's local tags instead.
    Emits an Asset event for the image and environment, with digest, previous digest and commit.
    """

    template_fields: Sequence[str] = ("image", "environment", "require_tag", "target_repository")
    ui_color = "#dcfce7"

    def __init__(
        self,
        *,
        image: str,
        repository: str,
        environment: str,
        require_tag: str | None = None,
        target_repository: str | None = None,
        registry: bool = True,
        docker_conn_id: str | None = None,
        target_docker_conn_id: str | None = None,
        docker_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("outlets", [image_asset(target_repository or repository, environment)])
        super().__init__(**kwargs)
        self.image = image
        self.repository = repository
        self.environment = environment
        self.require_tag = require_tag
        self.target_repository = target_repository
        self.registry = registry
        self.docker_conn_id = docker_conn_id
        self.target_docker_conn_id = target_docker_conn_id
        self.docker_url = docker_url

    def execute(self, context: Context) -> dict[str, Any]:
        from docker_delivery.images.engine_store import EngineImageStore
        from docker_delivery.images.promotion import promote
        from docker_delivery.images.ref import ImageRef

        image = ImageRef.parse(self.image).require_pinned()
        target = ImageRef.parse(self.target_repository) if self.target_repository else None
        if not self.registry:
            with closing(engine_client(self.docker_url)) as client:
                store = EngineImageStore(client, log=self.log.info)
                result = promote(
                    store, image, self.environment, require_tag=self.require_tag, log=self.log.info
                )
        else:
            with RegistryHook(self.docker_conn_id).get_client(image.registry) as source:
                dest = source
                if target is not None and target.registry != image.registry:
                    dest = RegistryHook(self.target_docker_conn_id).get_client(target.registry)
                with dest:
                    result = promote(
                        source,
                        image,
                        self.environment,
                        require_tag=self.require_tag,
                        target=target,
                        target_store=dest,
                        copy=lambda src, dst: dest.copy(src, dst, source=source),
                        log=self.log.info,
                    )
        out = result.as_dict()
        asset = self.outlets[0] if self.outlets else None
        if asset is not None:
            context["outlet_events"][asset].extra = {
                k: out[k] for k in ("image", "digest", "previous_digest", "revision")
            }
        return out
