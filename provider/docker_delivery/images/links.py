"""Where a person sees an image: a link to it in its registry (for an operator's extra link).

Amazon ECR: the image's page in the AWS console. Docker Hub: the repository's page. Any other
registry (CNCF distribution, Harbor, GitLab, ...): the manifest through the registry's own API
(``/v2/<repository>/manifests/<digest>``), the one address every registry has.
"""

from __future__ import annotations

from docker_delivery.images.ref import ImageRef
from docker_delivery.images.registry.client import api_base
from docker_delivery.images.registry.ecr import ecr_registry

__all__ = ["image_url"]


def image_url(ref: ImageRef) -> str:
    """A link to ``ref`` (digest-pinned or tagged) in its registry."""
    reference = ref.digest or ref.tag_or_latest
    ecr = ecr_registry(ref.registry)
    if ecr is not None:
        return (
            f"https://{ecr.region}.console.aws.amazon.com/ecr/repositories/private/"
            f"{ecr.account}/{ref.repository}/_/image/{reference}/details"
            f"?region={ecr.region}"
        )
    if ref.registry == "docker.io":
        name = ref.repository.removeprefix("library/")
        return f"https://hub.docker.com/{'_' if name != ref.repository else 'r'}/{name}"
    return f"{api_base(ref.registry)}/v2/{ref.repository}/manifests/{reference}"
