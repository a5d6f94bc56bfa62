"""Amazon ECR: tags moved through ECR's own API, the OCI API authenticated by its tokens.

:class:`EcrRegistryClient` is a :class:`RegistryClient` whose tag operations use the ECR API
(a boto3 ``ecr`` client, made by the hook): a tag is resolved by ``DescribeImages``, moved by
``BatchGetImage`` then ``PutImage`` of the same manifest bytes and media type (nothing is pulled,
no layer moves), listed by ``ListImages``. Before a tag moves, the repository's tag mutability is
read: an IMMUTABLE repository (or a ``*_WITH_EXCLUSION`` filter that leaves the tag immutable)
is refused with what to change, before anything is written. A retry that finds the tag already
on the digest does nothing. Blob reads and writes (a build's push, a copy) go through the OCI API
with the login of ECR's authorization tokens, fetched when the registry first asks and again
when it refuses an expired one.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx

from docker_delivery.errors import ImageNotFound, PromotionRefused, RegistryError
from docker_delivery.images.ref import ImageRef
from docker_delivery.images.registry.client import RegistryClient
from docker_delivery.images.registry.manifest import MANIFEST_MEDIA_TYPES, Manifest, pick_platform

ECR_HOST: Final = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d)"
    r"\.amazonaws\.com(?:\.cn)?$"
)
_MAX_CONFIG_BYTES: Final = 16 * 1024 * 1024
_NOT_FOUND: Final = frozenset(
    {"ImageNotFoundException", "RepositoryNotFoundException", "ImageDigestDoesNotMatchException"}
)


@dataclass(frozen=True)
class EcrRegistry:
    """An ECR registry host's account and region."""

    account: str
    region: str


def ecr_registry(registry: str) -> EcrRegistry | None:
    """The account and region of an ECR registry host, None for any other registry."""
    found = ECR_HOST.match(registry.split("://", 1)[-1].rstrip("/"))
    return EcrRegistry(found["account"], found["region"]) if found else None


@dataclass(frozen=True)
class TagMutability:
    """A repository's tag mutability: ``MUTABLE``, ``IMMUTABLE`` or either ``*_WITH_EXCLUSION``
    with its wildcard filters (tags matching one have the other mutability)."""

    setting: str
    exclusions: tuple[str, ...] = ()

    def is_immutable(self, tag: str) -> bool:
        base_immutable = self.setting.startswith("IMMUTABLE")
        if self.setting.endswith("_WITH_EXCLUSION") and any(
            _wildcard(f).fullmatch(tag) for f in self.exclusions
        ):
            return not base_immutable
        return base_immutable

    def advice(self, tag: str) -> str:
        if self.setting == "IMMUTABLE":
            return (
                f"set the repository's tag mutability to IMMUTABLE_WITH_EXCLUSION with a filter "
                f"that matches {tag!r} (environment tags move; every other tag stays immutable)"
            )
        if self.setting == "MUTABLE_WITH_EXCLUSION":
            return f"remove the exclusion filter that matches {tag!r}"
        return f"add an exclusion filter that matches {tag!r}"


def _short(message: str) -> str:
    """An AWS error message on one line, at most 300 characters (a proxy's HTML page is not)."""
    line = " ".join(message.split())
    return line if len(line) <= 300 else line[:297] + "..."


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


class EcrRegistryClient(RegistryClient):
    """A client of one ECR registry: ``ecr`` is a boto3 ECR client of its region; ``credentials``
    gives ``(username, password)`` from an authorization token (see the module)."""

    def __init__(
        self,
        registry: str,
        ecr: Any,
        *,
        credentials: Callable[[], tuple[str, str]] | None = None,
        **options: Any,
    ) -> None:
        found = ecr_registry(registry)
        if found is None:
            raise ValueError(f"{registry!r} is not an Amazon ECR registry host")
        super().__init__(registry, scheme="https", credentials=credentials, **options)
        self.ecr = ecr
        self.account = found.account

    def __repr__(self) -> str:
        return f"EcrRegistryClient({self.registry!r})"

    # -- ECR's API -------------------------------------------------------------------------------

    def _call(self, operation: str, doing: str, **params: Any) -> Any:
        """One ECR call (throttling is retried with backoff by the client's retry mode);
        errors become this package's, naming what was being done."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.ecr, operation)(registryId=self.account, **params)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = _short(exc.response.get("Error", {}).get("Message") or str(exc))
            if code in _NOT_FOUND:
                raise ImageNotFound(
                    f"ECR {self.registry}: {doing}: {message}",
                    registry=self.registry,
                    reference=doing,
                ) from exc
            raise RegistryError(
                f"ECR {self.registry}: {doing}: {code} {message}", registry=self.registry
            ) from exc
        except BotoCoreError as exc:
            raise RegistryError(
                f"ECR {self.registry}: {doing}: {exc}", registry=self.registry
            ) from exc

    @staticmethod
    def _image_id(ref: ImageRef) -> dict[str, str]:
        return {"imageDigest": ref.digest} if ref.digest else {"imageTag": ref.tag_or_latest}

    def resolve(self, ref: ImageRef) -> str:
        self._check_ref(ref)
        found = self._call(
            "describe_images",
            f"resolving {ref}",
            repositoryName=ref.repository,
            imageIds=[self._image_id(ref)],
        )
        details = found.get("imageDetails") or []
        if not details:
            raise ImageNotFound(f"ECR {self.registry}: {ref} not found", registry=self.registry)
        return str(details[0]["imageDigest"])

    def get_manifest(self, ref: ImageRef) -> Manifest:
        self._check_ref(ref)
        return self._manifest(ref.repository, self._image_id(ref), str(ref))

    def _manifest(self, repository: str, image_id: dict[str, str], what: str) -> Manifest:
        found = self._call(
            "batch_get_image",
            f"reading the manifest of {what}",
            repositoryName=repository,
            imageIds=[image_id],
            acceptedMediaTypes=list(MANIFEST_MEDIA_TYPES),
        )
        images = found.get("images") or []
        if not images:
            failures = "; ".join(
                f"{f.get('failureCode')}: {f.get('failureReason')}"
                for f in found.get("failures") or []
            )
            raise ImageNotFound(
                f"ECR {self.registry}: no manifest for {what} ({failures or 'not found'})",
                registry=self.registry,
            )
        image = images[0]
        raw = str(image["imageManifest"]).encode()
        manifest = Manifest.from_bytes(raw, image.get("imageManifestMediaType"))
        # ECR names the image by its own digest; the stored bytes are what moves.
        return Manifest(manifest.media_type, str(image["imageId"]["imageDigest"]), raw)

    def list_tags(self, ref: ImageRef) -> list[str]:
        self._check_ref(ref)
        return self.tags(ref.repository)

    def tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        tags: list[str] = []
        params: dict[str, Any] = {
            "repositoryName": repository,
            "filter": {"tagStatus": "TAGGED"},
            "maxResults": page_size or 1000,
        }
        while True:
            page = self._call("list_images", f"listing the tags of {repository}", **params)
            tags.extend(i["imageTag"] for i in page.get("imageIds") or [] if i.get("imageTag"))
            if not page.get("nextToken"):
                return sorted(set(tags))
            params["nextToken"] = page["nextToken"]

    def mutability(self, repository: str) -> TagMutability:
        found = self._call(
            "describe_repositories",
            f"reading the tag mutability of {repository}",
            repositoryNames=[repository],
        )
        repo = (found.get("repositories") or [{}])[0]
        filters = tuple(
            str(f.get("filter", "")) for f in repo.get("imageTagMutabilityExclusionFilters") or []
        )
        return TagMutability(str(repo.get("imageTagMutability") or "MUTABLE"), filters)

    def check_movable(self, ref: ImageRef, digest: str) -> None:
        """PromotionRefused, before anything is written, unless ``ref``'s tag (an environment
        tag) can point at ``digest`` now and move again at the next promotion."""
        self._refuse_fixed(ref, digest, later=True)

    def _refuse_fixed(self, ref: ImageRef, digest: str, *, later: bool) -> None:
        tag = ref.tag_or_latest
        mutability = self.mutability(ref.repository)
        if not mutability.is_immutable(tag):
            return
        try:
            current: str | None = self.resolve(ref.without_tag().with_tag(tag))
        except ImageNotFound:
            current = None
        if current == digest or (current is None and not later):
            return
        now = f"points at {current}" if current else "would never move again once written"
        raise PromotionRefused(
            f"ECR repository {ref.repository} has tag mutability {mutability.setting}"
            + (f" (exclusions {list(mutability.exclusions)})" if mutability.exclusions else "")
            + f": tag {tag!r} {now}, so it cannot follow {digest}; {mutability.advice(tag)}"
        )

    def tag(self, pinned: ImageRef, tag: str) -> ImageRef:
        """``tag`` onto ``pinned``'s digest: ``PutImage`` of the manifest ``BatchGetImage`` read,
        byte for byte. Nothing is pulled and no layer moves; a tag already there is left."""
        pinned = pinned.require_pinned()
        self._check_ref(pinned)
        digest = str(pinned.digest)
        target = ImageRef(pinned.registry, pinned.repository, tag, digest)
        self._refuse_fixed(target, digest, later=False)
        manifest = self._manifest(pinned.repository, {"imageDigest": digest}, str(pinned))
        from botocore.exceptions import ClientError

        try:
            self.ecr.put_image(
                registryId=self.account,
                repositoryName=pinned.repository,
                imageManifest=manifest.raw.decode(),
                imageManifestMediaType=manifest.media_type,
                imageTag=tag,
                imageDigest=digest,
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("ImageAlreadyExistsException", "ImageTagAlreadyExistsException"):
                raise RegistryError(
                    f"ECR {self.registry}: moving {pinned.repository}:{tag} to {digest}: {exc}",
                    registry=self.registry,
                ) from exc
            # Already there (a retry), or the tag became immutable since the check above.
            self._refuse_fixed(target, digest, later=False)
            if self.resolve(target.without_tag().with_tag(tag)) != digest:
                raise PromotionRefused(
                    f"ECR refused to move {pinned.repository}:{tag} to {digest}: {exc}"
                ) from exc
            self.log(f"{target.name}:{tag} already points at {digest}")
            return target
        self.log(f"tagged {target.name}:{tag} -> {digest} (ECR PutImage)")
        return target

    def image_labels(self, ref: ImageRef) -> dict[str, str]:
        """The image's labels, from its config blob (``GetDownloadUrlForLayer``); {} with a log
        line when ECR does not give the blob (the labels are informational here)."""
        self._check_ref(ref)
        try:
            manifest = self._manifest(ref.repository, self._image_id(ref), str(ref))
            if manifest.is_index:
                child = pick_platform(manifest.child_descriptors)
                if child is None:
                    return {}
                manifest = self._manifest(ref.repository, {"imageDigest": child.digest}, str(ref))
            config = manifest.document.get("config")
            if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
                return {}
            url = self._call(
                "get_download_url_for_layer",
                f"locating the config of {ref}",
                repositoryName=ref.repository,
                layerDigest=config["digest"],
            )["downloadUrl"]
            with httpx.stream("GET", url, timeout=30, follow_redirects=True) as response:
                response.raise_for_status()
                data = b""
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > _MAX_CONFIG_BYTES:
                        raise RegistryError(f"the config of {ref} is over 16 MiB")
            labels = (json.loads(data).get("config") or {}).get("Labels") or {}
        except (RegistryError, httpx.HTTPError, ValueError, AttributeError) as exc:
            self.log(f"the labels of {ref} were not read ({exc}): its revision is not recorded")
            return {}
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
