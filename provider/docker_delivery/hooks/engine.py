"""Docker Engine clients for operators: the engine is named by URL, as in DockerOperator."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import docker


def engine_client(docker_url: str | None = None, *, timeout: int = 120) -> docker.DockerClient:
    """A docker SDK client for ``docker_url``; ``None`` means DOCKER_HOST or the default socket."""
    import docker

    if docker_url:
        return docker.DockerClient(base_url=docker_url, timeout=timeout)
    return docker.from_env(timeout=timeout)
