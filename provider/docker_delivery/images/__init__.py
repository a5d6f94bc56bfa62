"""Images: OCI references, the registry client, the engine's image store, build, test, promote.

The public names load lazily (PEP 562): ``from docker_delivery.images import RegistryClient``
works, while a DAG file that only needs ImageRef does not import httpx while it is parsed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from docker_delivery.errors import (
    ImageNotFound,
    InvalidReference,
    RegistryError,
    RegistryUnavailable,
    Unauthorized,
)
from docker_delivery.images.ref import ImageRef

if TYPE_CHECKING:
    from docker_delivery.images.engine_store import EngineImageStore
    from docker_delivery.images.registry import RegistryClient

_LAZY = {
    "EngineImageStore": "docker_delivery.images.engine_store",
    "RegistryClient": "docker_delivery.images.registry",
}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
