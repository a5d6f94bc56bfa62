"""RegistryClient: the OCI Distribution API (v2) of one registry, over httpx. The package's
rooms: the manifest model (:mod:`.manifest`), HTTP with authentication and retries
(:mod:`.http`), the client's operations (:mod:`.client`), copying images (:mod:`.copy`).

What delivery needs from a registry, and nothing more:

* :meth:`RegistryClient.resolve` a tag to the digest it points at;
* :meth:`RegistryClient.tag` a digest with an environment tag (promotion): the manifest is read
  by digest and written back under the tag, byte for byte, so no blob moves;
* :meth:`RegistryClient.copy` an image into another repository (cross-repository blob mount)
  or from another registry (blobs streamed from one to the other, never held in memory);
* list tags, read an image's labels, and look up or delete what tests leave behind.

Authentication is what ``docker login`` does: anonymous first; on a 401 either HTTP Basic with
the given login, or a bearer token fetched from the realm the registry names (cached per scope).
Transient failures (connection errors, timeouts, 429 and 5xx) are retried with exponential
backoff before :class:`~docker_delivery.errors.RegistryUnavailable` is raised. The password never
appears in ``repr()``, in error messages, or in the log.

This is domain code: it must never import airflow.
"""

from docker_delivery.images.registry.client import RegistryClient
from docker_delivery.images.registry.manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
)

__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "MANIFEST_MEDIA_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Descriptor",
    "Manifest",
    "RegistryClient",
]
