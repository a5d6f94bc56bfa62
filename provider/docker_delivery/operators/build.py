"""BuildImageOperator: build a commit once, push it, return its digest-pinned reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import closing
from typing import Any

from airflow.sdk import BaseOperator, Context

from docker_delivery.hooks.engine import engine_client
from docker_delivery.hooks.registry import RegistryHook
from docker_delivery.operators.links import ImageLink
from docker_delivery.targets.engine_errors import engine_calls


class BuildImageOperator(BaseOperator):
    """Build ``context`` into ``<repository>:<revision>``, label it, push it (once per commit).

    Returns (XCom) the pinned reference ``<repository>:<revision>@sha256:...``; the whole build
    result is pushed under the key ``build``. A retry finds the image of this revision in the
    registry (or the engine) and builds nothing.
    """

    operator_extra_links = (ImageLink(),)
    template_fields: Sequence[str] = (
        "repository",
        "revision",
        "context",
        "dockerfile",
        "build_args",
        "source",
        "extra_tags",
    )
    ui_color = "#dbeafe"

    def __init__(
        self,
        *,
        repository: str,
        revision: str,
        context: str,
        dockerfile: str = "Dockerfile",
        build_args: Mapping[str, str] | None = None,
        target: str | None = None,
        platform: str | None = None,
        source: str | None = None,
        extra_tags: Sequence[str] = (),
        push: bool = True,
        docker_url: str | None = None,
        engine_conn_id: str | None = None,
        docker_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.repository = repository
        self.revision = revision
        self.context = context
        self.dockerfile = dockerfile
        self.build_args = dict(build_args or {})
        self.target = target
        self.platform = platform
        self.source = source
        self.extra_tags = list(extra_tags)
        self.push = push
        self.docker_url = docker_url
        self.engine_conn_id = engine_conn_id
        self.docker_conn_id = docker_conn_id

    def execute(self, context: Context) -> str:
        from docker_delivery.images.build import BuildSpec, ImageBuilder
        from docker_delivery.images.ref import ImageRef

        spec = BuildSpec(
            repository=self.repository,
            revision=self.revision,
            context=self.context,
            dockerfile=self.dockerfile,
            build_args=self.build_args,
            target=self.target,
            platform=self.platform,
            source=self.source,
            extra_tags=tuple(self.extra_tags),
            push=self.push,
        )
        registry = None
        if self.push:
            registry_host = ImageRef.parse(self.repository).registry
            registry = RegistryHook(self.docker_conn_id).get_client(registry_host)
        with (
            closing(engine_client(self.docker_url, engine_conn_id=self.engine_conn_id)) as client,
            engine_calls(f"building {self.repository}:{self.revision}"),
        ):
            result = ImageBuilder(client, registry, log=self.log.info).build(spec)
        if registry is not None:
            registry.close()
        context["ti"].xcom_push(key="build", value=result.as_dict())
        return str(result.ref)
