"""PromoteImageOperator: move an environment tag to a digest; no rebuild, no layer transfer.
RequireTagOperator: check, before a stage changes anything, that its release has been through the
previous environment."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from docker_delivery.hooks.engine import engine_client
from docker_delivery.hooks.registry import RegistryHook
from docker_delivery.operators.common import tag_what_serves
from docker_delivery.operators.links import ImageLink
from docker_delivery.targets.engine_errors import engine_calls

if TYPE_CHECKING:
    from docker_delivery.images.promotion import PromotionResult
    from docker_delivery.images.ref import ImageRef


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

    With ``service`` (what a pipeline stage does, after its deployment and checks), the
    environment tag names what serves: the tag moves under the service's deployment lock
    (waiting ``lock_wait`` seconds) and only if ``image`` serves in ``environment`` now (its
    instances listen on ``app_port``); when another delivery has replaced it since, the task is
    skipped, nothing moves and no Asset event is emitted.
    """

    operator_extra_links = (ImageLink(),)
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
        engine_conn_id: str | None = None,
        service: str | None = None,
        app_port: int = 8080,
        lock_wait: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if service is not None and (target_repository is not None or not registry):
            raise ValueError("service (the tag follows what serves) takes the registry's own tags")
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
        self.engine_conn_id = engine_conn_id
        self.service = service
        self.app_port = app_port
        self.lock_wait = lock_wait

    def execute(self, context: Context) -> dict[str, Any]:
        from docker_delivery.images.engine_store import EngineImageStore
        from docker_delivery.images.promotion import promote
        from docker_delivery.images.ref import ImageRef

        image = ImageRef.parse(self.image).require_pinned()
        target = ImageRef.parse(self.target_repository) if self.target_repository else None
        if self.service is not None:
            result = self._promote_serving(image, context)
        elif not self.registry:
            with closing(
                engine_client(self.docker_url, engine_conn_id=self.engine_conn_id)
            ) as client:
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

    def _promote_serving(self, image: ImageRef, context: Context) -> PromotionResult:
        from docker_delivery.strategies.release_tag import Superseded

        assert self.service is not None
        with (
            closing(engine_client(self.docker_url, engine_conn_id=self.engine_conn_id)) as client,
            engine_calls(f"moving the {self.environment} tag"),
        ):
            try:
                return tag_what_serves(
                    client,
                    image,
                    self.environment,
                    service=self.service,
                    port=self.app_port,
                    docker_conn_id=self.docker_conn_id,
                    context=context,
                    lock_wait=self.lock_wait,
                    log=self.log.info,
                    require_tag=self.require_tag,
                )
            except Superseded as exc:
                raise AirflowSkipException(str(exc)) from exc


class RequireTagOperator(BaseOperator):
    """Fail unless ``<repository>:<tag>`` points at ``image``'s digest: the release has been
    through the environment ``tag`` names (whose tag names what passed there). Nothing moves; a
    stage runs it before it changes anything."""

    template_fields: Sequence[str] = ("image", "tag")
    ui_color = "#dcfce7"

    def __init__(
        self, *, image: str, tag: str, docker_conn_id: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.image = image
        self.tag = tag
        self.docker_conn_id = docker_conn_id

    def execute(self, context: Context) -> str:
        from docker_delivery.images.promotion import require_promoted
        from docker_delivery.images.ref import ImageRef

        image = ImageRef.parse(self.image).require_pinned()
        with RegistryHook(self.docker_conn_id).get_client(image.registry) as registry:
            digest = require_promoted(registry, image, self.tag)
        self.log.info(
            "%s:%s points at %s: it has been through %s", image.name, self.tag, digest, self.tag
        )
        return digest
