"""Promotion on Amazon ECR, against moto's server on loopback.

A tag moves through ECR's API (BatchGetImage, then PutImage of the same manifest bytes and media
type): the client's OCI transport refuses every request here, so nothing is pulled and no blob
moves. A retry that finds the tag on its digest changes nothing; an immutable environment tag is
refused with what to change, before anything is written; throttling is retried with backoff.

Where moto differs from ECR: it derives an image's digest from its layers unless PutImage names
one (the images here are put with their manifest digest, as ECR computes it); it cannot give a
layer's download URL (the labels, and with them the revision, are not read: logged); it answers
an immutable tag with ImageAlreadyExistsException where ECR says ImageTagAlreadyExistsException
(both are handled).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kit.moto import ACCOUNT, REGION, throttling_proxy

from docker_delivery.errors import PromotionRefused
from docker_delivery.images.promotion import promote
from docker_delivery.images.ref import ImageRef

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def clock() -> Any:
    """A minute per promotion: audit tags (stamped to the second) differ, as they do in use."""
    ticks = itertools.count()
    start = dt.datetime.now(dt.timezone.utc)
    return lambda: start + dt.timedelta(minutes=next(ticks))


def no_oci_requests(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"the OCI API was called: {request.method} {request.url}")


@pytest.fixture
def ecr(moto: str) -> Any:
    import boto3

    return boto3.client("ecr", endpoint_url=moto, region_name=REGION)


@pytest.fixture
def client(moto: str) -> Iterator[Any]:
    from docker_delivery.hooks.registry import RegistryHook

    with RegistryHook(None).get_client(
        REGISTRY, transport=httpx.MockTransport(no_oci_requests)
    ) as c:
        yield c


def repository(ecr: Any, mutability: str = "MUTABLE", exclusions: tuple[str, ...] = ()) -> str:
    name = f"dd-test/api-{os.urandom(4).hex()}"
    params: dict[str, Any] = {"repositoryName": name, "imageTagMutability": mutability}
    if exclusions:
        params["imageTagMutabilityExclusionFilters"] = [
            {"filterType": "WILDCARD", "filter": f} for f in exclusions
        ]
    ecr.create_repository(**params)
    return name


def put_build(ecr: Any, repo: str, layers: int = 3) -> ImageRef:
    """An image as a build pushes it: its manifest under a build tag; its digest (ECR's: the
    manifest's sha256)."""
    salt = os.urandom(8).hex()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + hashlib.sha256(f"config{salt}".encode()).hexdigest(),
            "size": 1234,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": "sha256:" + hashlib.sha256(f"layer{i}{salt}".encode()).hexdigest(),
                "size": 1000 + i,
            }
            for i in range(layers)
        ],
    }
    raw = json.dumps(manifest, indent=3)
    digest = "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    ecr.put_image(
        repositoryName=repo,
        imageManifest=raw,
        imageManifestMediaType=OCI_MANIFEST,
        imageTag=f"build-{salt}",
        imageDigest=digest,
    )
    return ImageRef(REGISTRY, repo, None, digest)


def tags_of(ecr: Any, repo: str) -> dict[str, str]:
    found = ecr.describe_images(repositoryName=repo)["imageDetails"]
    return {tag: d["imageDigest"] for d in found for tag in d.get("imageTags", [])}


def manifest_of(ecr: Any, repo: str, tag: str) -> tuple[str, str]:
    image = ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": tag}])["images"][0]
    return image["imageManifest"], image["imageManifestMediaType"]


def test_promotion_moves_the_tag_through_ecr_with_the_same_manifest_bytes(
    ecr: Any, client: Any
) -> None:
    now = clock()
    assert type(client).__name__ == "EcrRegistryClient"
    repo = repository(ecr)
    first, second = put_build(ecr, repo), put_build(ecr, repo, layers=5)
    build_tag = next(t for t, d in tags_of(ecr, repo).items() if d == first.digest)
    built = manifest_of(ecr, repo, build_tag)
    one = promote(client, first, "staging", now=now, log=print)
    assert (one.previous_digest, one.already_promoted) == (None, False)
    assert one.revision is None  # moto gives no layer download URL: not read, logged
    tags = tags_of(ecr, repo)
    assert tags["staging"] == first.digest and tags[str(one.audit_tag)] == first.digest
    two = promote(client, second, "staging", now=now, log=print)
    assert two.previous_digest == first.digest
    assert tags_of(ecr, repo)["staging"] == second.digest
    assert manifest_of(ecr, repo, str(one.audit_tag)) == built  # the bytes ECR stored, as built


def test_a_retried_promotion_finds_the_tag_on_its_digest_and_writes_nothing(
    ecr: Any, client: Any
) -> None:
    now = clock()
    repo = repository(ecr)
    first, second = put_build(ecr, repo), put_build(ecr, repo, layers=2)
    promote(client, first, "staging", now=now, log=print)
    promote(client, second, "staging", now=now, log=print)
    before = tags_of(ecr, repo)
    again = promote(client, second, "staging", now=now, log=print)
    assert again.already_promoted and again.previous_digest == first.digest
    assert tags_of(ecr, repo) == before
    client.tag(second, "staging")  # the tag call itself, repeated: ECR says it exists; fine
    assert tags_of(ecr, repo) == before


def test_an_immutable_environment_tag_is_refused_before_anything_is_written(
    ecr: Any, client: Any
) -> None:
    now = clock()
    repo = repository(ecr, "IMMUTABLE")
    image = put_build(ecr, repo)
    before = tags_of(ecr, repo)
    with pytest.raises(PromotionRefused) as refused:
        promote(client, image, "staging", now=now, log=print)
    message = str(refused.value)
    assert "IMMUTABLE" in message and "'staging'" in message, message
    assert "IMMUTABLE_WITH_EXCLUSION with a filter that matches 'staging'" in message, message
    assert tags_of(ecr, repo) == before  # no audit tag either


def test_exclusion_filters_decide_which_tags_move(ecr: Any, client: Any) -> None:
    now = clock()
    # Environment tags excluded from immutability: they move, audit tags stay immutable.
    repo = repository(ecr, "IMMUTABLE_WITH_EXCLUSION", ("staging",))
    first, second = put_build(ecr, repo), put_build(ecr, repo, layers=4)
    promote(client, first, "staging", now=now, log=print)
    assert promote(client, second, "staging", now=now, log=print).previous_digest == first.digest
    # Production made immutable by an exclusion of a mutable repository: refused, saying so.
    repo = repository(ecr, "MUTABLE_WITH_EXCLUSION", ("prod*",))
    image = put_build(ecr, repo)
    with pytest.raises(
        PromotionRefused, match="remove the exclusion filter that matches 'production'"
    ):
        promote(client, image, "production", now=now, log=print)
    promote(client, image, "staging", now=now, log=print)  # other tags move
    assert tags_of(ecr, repo)["staging"] == image.digest


def test_the_registry_login_comes_from_ecr_authorization_tokens(moto: str) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    from docker_delivery.hooks.aws import ecr_login

    login = ecr_login("aws_default", REGION, ACCOUNT)
    username, password = login()
    assert username == "AWS" and password
    assert redact(f"login {password}") == "login ***"  # masked in every task log from now on


def test_throttling_is_retried_with_backoff(ecr: Any, moto: str) -> None:
    from docker_delivery.hooks.registry import RegistryHook

    repo = repository(ecr)
    image = put_build(ecr, repo)
    with throttling_proxy(moto, failures=3) as (url, seen):
        connection = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
        connection["extra"]["endpoint_url"] = url
        del connection["extra"]["config_kwargs"]  # the provider's retries: throttling backs off
        os.environ["AIRFLOW_CONN_AWS_THROTTLED"] = json.dumps(connection)
        os.environ["AIRFLOW_CONN_ECR_THROTTLED"] = json.dumps(
            {"conn_type": "docker", "extra": {"aws_conn_id": "aws_throttled"}}
        )
        try:
            with RegistryHook("ecr_throttled").get_client(REGISTRY) as throttled:
                assert throttled.resolve(image) == image.digest
        finally:
            del os.environ["AIRFLOW_CONN_AWS_THROTTLED"], os.environ["AIRFLOW_CONN_ECR_THROTTLED"]
    assert seen["throttled"] == 3 and seen["forwarded"] >= 1, seen
