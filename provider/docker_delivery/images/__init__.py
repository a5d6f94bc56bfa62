"""Images: OCI references, the registry client, the engine's image store, build, test, promote."""

from docker_delivery.errors import (
    ImageNotFound,
    InvalidReference,
    RegistryError,
    RegistryUnavailable,
    Unauthorized,
)
from docker_delivery.images.engine_store import EngineImageStore
from docker_delivery.images.ref import ImageRef
from docker_delivery.images.registry import RegistryClient

__all__ = [
    "EngineImageStore",
    "ImageNotFound",
    "ImageRef",
    "InvalidReference",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailable",
    "Unauthorized",
]
