"""RegistryClient against real registries: the bed's, plus two started here.

* the bed's registry (bed.registry): resolve, manifests, promotion by tag, mounts, tags, errors;
  its access log proves what went over the wire (a promotion uploads no blob, a copy within the
  registry mounts);
* a second registry on 127.0.0.1:5002 (fresh storage): copies across registries stream blobs;
* a third on 127.0.0.1:5003 with htpasswd (bcrypt) authentication: logins right and wrong.

Every image lives in a repository unique to the run (dd-test/<uuid8>).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from docker_delivery.errors import (
    ImageNotFound,
    InvalidReference,
    RegistryUnavailable,
    Unauthorized,
)
from docker_delivery.images.ref import ImageRef
from docker_delivery.images.registry import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    Manifest,
    RegistryClient,
)

pytestmark = pytest.mark.integration

SECOND_REGISTRY = "127.0.0.1:5002"
AUTH_REGISTRY = "127.0.0.1:5003"
AUTH_USER = "deployer"
AUTH_PASSWORD = f"pw-{uuid.uuid4().hex}"

_ACCESS_LINE = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>/v2/[^ "]*) HTTP/[0-9.]+" (?P<status>\d{3})'
)


# -- helpers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int


def requests_for(log_text: str, repository: str) -> list[Request]:
    """The access-log requests that touch ``repository`` (and no other repository)."""
    prefix = f"/v2/{repository}/"
    found = []
    for match in _ACCESS_LINE.finditer(log_text):
        if match["path"].startswith(prefix):
            found.append(Request(match["method"], match["path"], int(match["status"])))
    return found


def blob_uploads(requests: list[Request]) -> list[Request]:
    """Requests that upload blob data or open a blob upload (mounts included)."""
    return [r for r in requests if "/blobs/uploads/" in r.path or r.method == "PATCH"]


def data_uploads(requests: list[Request]) -> list[Request]:
    """Requests that carry blob bytes: PATCH chunks and the PUT closing an upload."""
    return [r for r in requests if "/blobs/uploads/" in r.path and r.method in ("PATCH", "PUT")]


def wait_for_log(read: Any, repository: str, method: str, fragment: str) -> list[Request]:
    """Requests for ``repository`` once the log shows ``method`` on a path with ``fragment``.

    The registry writes an access line when a response completes; give it a moment.
    """
    deadline = time.monotonic() + 10
    while True:
        requests = requests_for(read(), repository)
        if any(r.method == method and fragment in r.path for r in requests):
            return requests
        if time.monotonic() > deadline:
            pytest.fail(f"the registry log never showed {method} ...{fragment} for {repository}")
        time.sleep(0.1)


@dataclass(frozen=True)
class Served:
    address: str
    log: Path

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def log_since(self, offset: int) -> str:
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")


def serve_registry(directory: Path, address: str, htpasswd: Path | None = None) -> Iterator[Served]:
    """Run `docker-registry serve` on ``address`` with storage in ``directory`` until teardown."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed: run tests/bed/up (it installs it)")
    auth = ""
    if htpasswd is not None:
        auth = f"auth:\n  htpasswd:\n    realm: docker-delivery-test\n    path: {htpasswd}\n"
    config = directory / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {directory / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\n" + auth
    )
    log = directory / "registry.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [binary, "serve", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"registry on {address} exited: {log.read_text()[-2000:]}")
            try:
                status = httpx.get(f"http://{address}/v2/", timeout=1).status_code
                if status in (200, 401):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"registry on {address} did not answer: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Served(address, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- fixtures --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    ref: ImageRef  # registry/repository:v1
    digest: str  # what docker push reported
    repo_digest: str  # from the image's RepoDigests
    image_id: str
    revision: str
    push_log: str  # the bed registry's log lines written while docker pushed


@pytest.fixture(scope="module")
def repository() -> str:
    return f"dd-test/{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def pushed(bed: Any, docker_client: Any, repository: str) -> Iterator[Pushed]:
    """A small image built FROM the bed's python image and pushed once by docker."""
    revision = uuid.uuid4().hex
    dockerfile = (
        f"FROM {bed.python_image}\n"
        # The revision in the RUN makes the layer new on every run: no build cache, no mount.
        f"RUN echo {revision} > /dd-revision && head -c 1048576 /dev/urandom > /dd-random\n"
        f"LABEL org.opencontainers.image.revision={revision}\n"
    )
    name = f"{bed.registry}/{repository}"
    image, _ = docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=f"{name}:v1", rm=True
    )
    offset = bed.registry_log_size()
    digest = ""
    for line in docker_client.images.push(name, tag="v1", stream=True, decode=True):
        if "error" in line:
            pytest.fail(f"docker push {name}:v1 failed: {line['error']}")
        digest = line.get("aux", {}).get("Digest", digest)
    push_log = bed.registry_log_since(offset)
    image.reload()
    repo_digests = [d for d in image.attrs["RepoDigests"] if d.startswith(f"{name}@")]
    assert digest, "docker push reported no digest"
    yield Pushed(
        ref=ImageRef.parse(f"{name}:v1"),
        digest=digest,
        repo_digest=repo_digests[0].split("@", 1)[1] if repo_digests else "",
        image_id=image.id,
        revision=revision,
        push_log=push_log,
    )
    docker_client.images.remove(image.id, force=True)


@pytest.fixture(scope="module")
def client(bed: Any) -> Iterator[RegistryClient]:
    with RegistryClient(bed.registry, retries=2, backoff=0.1) as registry:
        yield registry


@pytest.fixture(scope="module")
def second_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve_registry(tmp_path_factory.mktemp("registry-5002"), SECOND_REGISTRY)


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    import bcrypt

    directory = tmp_path_factory.mktemp("registry-5003")
    htpasswd = directory / "htpasswd"
    hashed = bcrypt.hashpw(AUTH_PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    htpasswd.write_text(f"{AUTH_USER}:{hashed}\n")
    yield from serve_registry(directory, AUTH_REGISTRY, htpasswd)


# -- the bed's registry ----------------------------------------------------------------------------


def test_log_counting_sees_the_blob_uploads_of_a_real_push(pushed: Pushed) -> None:
    """The check that promotion uploads nothing can fail: a push does show up in the log."""
    requests = requests_for(pushed.push_log, pushed.ref.repository)
    assert data_uploads(requests), f"no blob upload seen in the log of a push: {requests}"
    assert any(r.method == "PUT" and "/manifests/v1" in r.path for r in requests)


def test_resolve_tag_gives_the_digest_docker_reports(
    client: RegistryClient, pushed: Pushed
) -> None:
    assert client.resolve(pushed.ref) == pushed.digest
    assert pushed.repo_digest == pushed.digest
    assert client.resolve(pushed.ref.with_digest(pushed.digest)) == pushed.digest


def test_get_manifest(client: RegistryClient, pushed: Pushed) -> None:
    manifest = client.get_manifest(pushed.ref)
    assert manifest.media_type == DOCKER_MANIFEST
    assert manifest.digest == pushed.digest
    assert not manifest.is_index
    assert manifest.children == []
    assert manifest.blobs[0] == pushed.image_id  # the config blob is the image ID
    assert len(manifest.blobs) >= 3  # config, the base layer(s), the random layer
    assert client.get_manifest(pushed.ref.with_digest(pushed.digest)).raw == manifest.raw
    assert client.image_labels(pushed.ref)["org.opencontainers.image.revision"] == (pushed.revision)


def test_tag_promotes_without_transferring_a_blob(
    bed: Any, client: RegistryClient, pushed: Pushed
) -> None:
    logged: list[str] = []
    repository = pushed.ref.repository
    offset = bed.registry_log_size()
    with RegistryClient(bed.registry, log=logged.append) as registry:
        promoted = registry.tag(pushed.ref.with_digest(pushed.digest), "staging")

    assert promoted == ImageRef(bed.registry, repository, "staging", pushed.digest)
    requests = wait_for_log(
        lambda: bed.registry_log_since(offset), repository, "PUT", "/manifests/staging"
    )
    assert blob_uploads(requests) == []
    assert [r for r in requests if "/blobs/" in r.path and r.method != "HEAD"] == []
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in requests] == [
        ("GET", pushed.digest),
        ("PUT", "staging"),
    ]
    assert client.resolve(pushed.ref.with_tag("staging")) == pushed.digest
    assert logged == [f"tagged {bed.registry}/{repository}:staging -> {pushed.digest}"]


def test_tag_refuses_an_unpinned_reference(client: RegistryClient, pushed: Pushed) -> None:
    with pytest.raises(InvalidReference, match="not pinned"):
        client.tag(pushed.ref, "staging")


def test_copy_within_the_registry_mounts_blobs(
    bed: Any, client: RegistryClient, pushed: Pushed
) -> None:
    target = f"{pushed.ref.repository}-prod"
    manifest = client.get_manifest(pushed.ref)
    logged: list[str] = []
    offset = bed.registry_log_size()
    with RegistryClient(bed.registry, log=logged.append) as registry:
        copied = registry.copy(
            pushed.ref.with_digest(pushed.digest), ImageRef(bed.registry, target, "v1")
        )

    assert copied == ImageRef(bed.registry, target, "v1", pushed.digest)
    requests = wait_for_log(lambda: bed.registry_log_since(offset), target, "PUT", "/manifests/v1")
    mounts = [r for r in requests if "mount=" in r.path]
    assert len(mounts) == len(manifest.blobs)
    assert all(r.method == "POST" and r.status == 201 for r in mounts)
    assert data_uploads(requests) == []
    assert sum("mounted blob" in line for line in logged) == len(manifest.blobs)
    assert client.resolve(ImageRef(bed.registry, target, "v1")) == pushed.digest


def test_tags_lists_every_tag(client: RegistryClient, pushed: Pushed) -> None:
    client.tag(pushed.ref.with_digest(pushed.digest), "listed")
    assert {"v1", "listed"} <= set(client.tags(pushed.ref.repository))
    assert {"v1", "listed"} <= set(client.tags(pushed.ref.repository, page_size=1))
    assert set(client.list_tags(pushed.ref)) == set(client.tags(pushed.ref.repository))


def test_unknown_tag_is_image_not_found(client: RegistryClient, pushed: Pushed) -> None:
    missing = pushed.ref.with_tag("never-pushed")
    with pytest.raises(ImageNotFound) as caught:
        client.resolve(missing)
    message = str(caught.value)
    assert f"{pushed.ref.repository}:never-pushed" in message
    assert client.registry in message
    assert "pushed" in message


def test_unknown_digest_is_image_not_found(client: RegistryClient, pushed: Pushed) -> None:
    absent = "sha256:" + "0" * 64
    with pytest.raises(ImageNotFound) as caught:
        client.get_manifest(pushed.ref.with_digest(absent))
    message = str(caught.value)
    assert absent in message
    assert client.registry in message
    assert "pushed" in message
    with pytest.raises(ImageNotFound):
        client.resolve(pushed.ref.with_digest(absent))
    assert not client.blob_exists(pushed.ref.repository, absent)


def test_unknown_repository_tags_is_image_not_found(client: RegistryClient, bed: Any) -> None:
    with pytest.raises(ImageNotFound, match="repository"):
        client.tags(f"dd-test/absent-{uuid.uuid4().hex[:8]}")


def test_delete_manifest(client: RegistryClient, pushed: Pushed, bed: Any) -> None:
    target = f"{pushed.ref.repository}-delete"
    copied = client.copy(pushed.ref.with_digest(pushed.digest), ImageRef(bed.registry, target, "x"))
    client.delete_manifest(target, pushed.digest)
    with pytest.raises(ImageNotFound):
        client.resolve(copied)
    with pytest.raises(ImageNotFound):
        client.delete_manifest(target, pushed.digest)


def test_registry_down_is_unavailable_after_retries() -> None:
    started = time.monotonic()
    with (
        RegistryClient("127.0.0.1:5999", retries=1, backoff=0.05) as registry,
        pytest.raises(RegistryUnavailable) as caught,
    ):
        registry.resolve(ImageRef.parse("127.0.0.1:5999/app:v1"))
    assert time.monotonic() - started < 10
    assert caught.value.attempts == 2
    message = str(caught.value)
    assert "127.0.0.1:5999" in message
    assert "2 attempts" in message
    assert "ConnectError" in message
    assert "running and reachable" in message


# -- across registries -------------------------------------------------------------------------


def test_copy_across_registries_streams_blobs(
    client: RegistryClient, pushed: Pushed, second_registry: Served
) -> None:
    """An index (manifest list) is copied with its child, whose blobs are streamed."""
    manifest = client.get_manifest(pushed.ref)
    index = Manifest.from_bytes(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST_LIST,
                "manifests": [
                    {
                        "mediaType": manifest.media_type,
                        "digest": manifest.digest,
                        "size": len(manifest.raw),
                        "platform": {"architecture": "amd64", "os": "linux"},
                    }
                ],
            },
            indent=3,
        ).encode()
    )
    repository = pushed.ref.repository
    assert client.put_manifest(repository, "multi", index) == index.digest
    assert client.get_manifest(pushed.ref.with_tag("multi")).is_index

    logged: list[str] = []
    offset = second_registry.log_size()
    with RegistryClient(second_registry.address, log=logged.append) as destination:
        copied = destination.copy(
            ImageRef(client.registry, repository, None, index.digest),
            ImageRef(second_registry.address, repository, "multi"),
            source=client,
        )
        assert copied == ImageRef(second_registry.address, repository, "multi", index.digest)
        assert destination.resolve(copied.with_tag("multi")) == index.digest
        child = destination.get_manifest(
            ImageRef(copied.registry, repository, None, manifest.digest)
        )
        assert child.raw == manifest.raw
        for blob in manifest.blobs:
            assert destination.blob_exists(repository, blob)
        assert destination.image_labels(copied)["org.opencontainers.image.revision"] == (
            pushed.revision
        )

        requests = wait_for_log(
            lambda: second_registry.log_since(offset), repository, "PUT", "/manifests/multi"
        )
        uploads = [r for r in data_uploads(requests) if r.method == "PUT"]
        assert len(uploads) == len(manifest.blobs)
        assert all(r.status == 201 and "digest=" in r.path for r in uploads)
        assert not any("mount=" in r.path or r.method == "PATCH" for r in requests)
        assert sum("copied blob" in line for line in logged) == len(manifest.blobs)

        # Again, by tag of the single image: every blob is there, nothing moves.
        offset = second_registry.log_size()
        again = destination.copy(
            pushed.ref.with_digest(pushed.digest),
            ImageRef(second_registry.address, repository, "v1"),
            source=client,
        )
        assert again.digest == pushed.digest
        requests = wait_for_log(
            lambda: second_registry.log_since(offset), repository, "PUT", "/manifests/v1"
        )
        assert blob_uploads(requests) == []


# -- authentication --------------------------------------------------------------------------------


def test_htpasswd_registry_right_and_wrong_password(
    client: RegistryClient, pushed: Pushed, auth_registry: Served
) -> None:
    repository = pushed.ref.repository
    destination_ref = ImageRef(auth_registry.address, repository, "v1")
    logged: list[str] = []
    with RegistryClient(
        auth_registry.address, username=AUTH_USER, password=AUTH_PASSWORD, log=logged.append
    ) as registry:
        assert AUTH_PASSWORD not in repr(registry)
        copied = registry.copy(
            pushed.ref.with_digest(pushed.digest), destination_ref, source=client
        )
        assert registry.resolve(destination_ref) == pushed.digest
        promoted = registry.tag(copied, "production")
        assert registry.resolve(promoted.with_tag("production")) == pushed.digest
    assert all(AUTH_PASSWORD not in line for line in logged)

    with (
        RegistryClient(
            auth_registry.address, username=AUTH_USER, password="wrong-" + AUTH_PASSWORD
        ) as registry,
        pytest.raises(Unauthorized) as caught,
    ):
        registry.resolve(destination_ref)
    message = str(caught.value)
    assert auth_registry.address in message
    assert "login/password" in message
    assert AUTH_PASSWORD not in message
    assert AUTH_PASSWORD not in repr(caught.value)

    with (
        RegistryClient(auth_registry.address) as anonymous,
        pytest.raises(Unauthorized, match="login/password"),
    ):
        anonymous.resolve(destination_ref)
