"""RegistryClient behaviour the test bed's registry cannot produce, over httpx.MockTransport.

Bearer tokens (the bed's registry has no token service), transient failures, Retry-After and
Link pagination. Everything else is tested against the real registry in
tests/integration/test_registry.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable

import httpx
import pytest

from docker_delivery.errors import RegistryProtocolError, RegistryUnavailable, Unauthorized
from docker_delivery.images.ref import ImageRef
from docker_delivery.images.registry import DOCKER_MANIFEST, Manifest, RegistryClient
from docker_delivery.images.registry import http as registry_http

REGISTRY = "registry.example.test"
REALM = "https://auth.example.test/token"
MANIFEST_BYTES = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "x", "digest": "sha256:" + "c" * 64, "size": 2},
        "layers": [{"mediaType": "y", "digest": "sha256:" + "1" * 64, "size": 3}],
    }
).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST_BYTES).hexdigest()
SECRET = "hunter2-very-secret"


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the client's waits instead of sleeping."""
    waited: list[float] = []
    monkeypatch.setattr(registry_http, "_sleep", waited.append)
    return waited


def client(handler: Callable[[httpx.Request], httpx.Response], **kwargs: object) -> RegistryClient:
    return RegistryClient(REGISTRY, transport=httpx.MockTransport(handler), **kwargs)  # type: ignore[arg-type]


def manifest_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200,
        headers={"Docker-Content-Digest": DIGEST, "Content-Type": DOCKER_MANIFEST},
        content=b"" if request.method == "HEAD" else MANIFEST_BYTES,
    )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_bearer_token_is_fetched_from_the_realm_and_cached_per_scope() -> None:
    token_requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.test":
            token_requests.append(request)
            scope = request.url.params["scope"]
            return httpx.Response(200, json={"access_token": f"tok-{len(token_requests)}:{scope}"})
        assert request.url.scheme == "https"
        reading = request.method in ("GET", "HEAD")
        scope = "repository:app:pull" if reading else "repository:app:pull,push"
        if not request.headers.get("Authorization", "").endswith(scope):
            return httpx.Response(
                401,
                headers={
                    "WWW-Authenticate": f'Bearer realm="{REALM}",service="{REGISTRY}",'
                    f'scope="{scope}",error="invalid_token"'
                },
            )
        if request.method == "PUT":
            return httpx.Response(201, headers={"Docker-Content-Digest": DIGEST})
        return manifest_ok(request)

    with client(handler, username="alice", password=SECRET) as registry:
        ref = ImageRef.parse(f"{REGISTRY}/app:v1")
        assert registry.resolve(ref) == DIGEST
        assert registry.resolve(ref) == DIGEST
        assert registry.get_manifest(ref).digest == DIGEST
        assert len(token_requests) == 1  # one pull token, reused
        token = token_requests[0]
        assert token.url.params["service"] == REGISTRY
        assert token.url.params["scope"] == "repository:app:pull"
        assert token.headers["Authorization"] == basic("alice", SECRET)

        registry.tag(ref.with_digest(DIGEST), "staging")  # a push needs a push-scoped token
        assert [r.url.params["scope"] for r in token_requests] == [
            "repository:app:pull",
            "repository:app:pull,push",
        ]


def test_token_service_answering_token_field_is_accepted_anonymously() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.test":
            assert "Authorization" not in request.headers
            return httpx.Response(200, json={"token": "anon"})
        if request.headers.get("Authorization") != "Bearer anon":
            return httpx.Response(401, headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'})
        return manifest_ok(request)

    with client(handler) as registry:
        assert registry.resolve(ImageRef.parse(f"{REGISTRY}/app:v1")) == DIGEST


def test_503_is_retried_then_succeeds(sleeps: list[float]) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) < 3:
            return httpx.Response(503)
        return manifest_ok(request)

    with client(handler, retries=4, backoff=0.1) as registry:
        assert registry.resolve(ImageRef.parse(f"{REGISTRY}/app:v1")) == DIGEST
    assert len(calls) == 3
    assert sleeps == [0.1, 0.2]  # backoff * 2**attempt


def test_retries_exhausted_raise_unavailable_with_the_attempt_count(sleeps: list[float]) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(502)

    with (
        client(handler, retries=2, backoff=0) as registry,
        pytest.raises(RegistryUnavailable) as caught,
    ):
        registry.resolve(ImageRef.parse(f"{REGISTRY}/app:v1"))
    assert len(calls) == 3
    assert caught.value.attempts == 3
    message = str(caught.value)
    assert REGISTRY in message
    assert "3 attempts" in message
    assert "HTTP 502" in message
    assert "running and reachable" in message


def test_connection_errors_are_retried(sleeps: list[float]) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return manifest_ok(request)

    with client(handler, backoff=0) as registry:
        assert registry.resolve(ImageRef.parse(f"{REGISTRY}/app:v1")) == DIGEST
    assert len(calls) == 2


def test_non_transient_4xx_is_not_retried(sleeps: list[float]) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, json={"errors": [{"code": "NAME_INVALID", "message": "bad"}]})

    with client(handler) as registry, pytest.raises(RegistryProtocolError, match="NAME_INVALID"):
        registry.get_manifest(ImageRef.parse(f"{REGISTRY}/app:v1"))
    assert len(calls) == 1
    assert sleeps == []


def test_retry_after_is_honoured(sleeps: list[float]) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "7"})
        return manifest_ok(request)

    with client(handler, backoff=0) as registry:
        assert registry.resolve(ImageRef.parse(f"{REGISTRY}/app:v1")) == DIGEST
    assert sleeps == [7.0]


def test_401_with_wrong_password_is_unauthorized_without_the_password() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(
            401,
            headers={"WWW-Authenticate": 'Basic realm="Registry Realm"'},
            json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
        )

    logged: list[str] = []
    registry = client(handler, username="alice", password=SECRET, log=logged.append)
    with registry, pytest.raises(Unauthorized) as caught:
        registry.resolve(ImageRef.parse(f"{REGISTRY}/app:v1"))
    assert seen == [None, basic("alice", SECRET)]  # anonymous first, then basic once
    message = str(caught.value)
    assert REGISTRY in message
    assert "login/password" in message
    for text in (message, repr(caught.value), repr(registry), *logged):
        assert SECRET not in text


def test_an_expiring_login_is_fetched_when_asked_and_again_when_refused() -> None:
    """As ECR's authorization tokens: the source gives a login when the registry first asks,
    and a fresh one when the registry refuses the one it was sent (it expired)."""
    valid = {"token": "token-1"}
    issued: list[str] = []
    seen: list[str | None] = []

    def login() -> tuple[str, str]:
        issued.append(valid["token"])
        return "AWS", valid["token"]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != basic("AWS", valid["token"]):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="ecr"'})
        return manifest_ok(request)

    ref = ImageRef.parse(f"{REGISTRY}/app:v1")
    with client(handler, credentials=login) as registry:
        assert registry.resolve(ref) == DIGEST
        assert registry.resolve(ref) == DIGEST  # the login kept while it is valid
        valid["token"] = "token-2"  # the first one expires
        assert registry.resolve(ref) == DIGEST
    assert issued == ["token-1", "token-2"]
    assert seen == [
        None,
        basic("AWS", "token-1"),
        basic("AWS", "token-1"),
        basic("AWS", "token-1"),
        basic("AWS", "token-2"),
    ]


def test_401_without_credentials_asks_for_a_login() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    with client(handler) as registry, pytest.raises(Unauthorized, match="login/password"):
        registry.resolve(ImageRef.parse(f"{REGISTRY}/app:v1"))


def test_token_service_refusing_the_login_is_unauthorized() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.test":
            return httpx.Response(401, json={"details": "incorrect username or password"})
        return httpx.Response(401, headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'})

    with (
        client(handler, username="alice", password=SECRET) as registry,
        pytest.raises(Unauthorized) as caught,
    ):
        registry.resolve(ImageRef.parse(f"{REGISTRY}/app:v1"))
    assert "login/password" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_tags_follow_link_pagination() -> None:
    pages = {
        None: (["a", "b"], '</v2/app/tags/list?n=2&last=b>; rel="next"'),
        "b": (["c"], None),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        tags, link = pages[request.url.params.get("last")]
        headers = {"Link": link} if link else {}
        return httpx.Response(200, headers=headers, json={"name": "app", "tags": tags})

    with client(handler) as registry:
        assert registry.tags("app", page_size=2) == ["a", "b", "c"]


def test_put_manifest_checks_the_registry_digest() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, headers={"Docker-Content-Digest": "sha256:" + "0" * 64})

    manifest = Manifest.from_bytes(MANIFEST_BYTES)
    with client(handler) as registry, pytest.raises(RegistryProtocolError, match="hash to"):
        registry.put_manifest("app", "v1", manifest)


def test_manifest_helpers() -> None:
    manifest = Manifest.from_bytes(MANIFEST_BYTES, "application/json")
    assert manifest.media_type == DOCKER_MANIFEST
    assert manifest.digest == DIGEST
    assert manifest.blobs == ["sha256:" + "c" * 64, "sha256:" + "1" * 64]
    assert not manifest.is_index
    assert manifest.children == []
    index = Manifest.from_bytes(
        json.dumps({"schemaVersion": 2, "manifests": [{"digest": DIGEST}]}).encode()
    )
    assert index.is_index
    assert index.children == [DIGEST]
    assert index.blobs == []


def test_scheme_and_api_host_defaults() -> None:
    assert RegistryClient("127.0.0.1:5000").base_url == "http://127.0.0.1:5000"
    assert RegistryClient("localhost:5000").base_url == "http://localhost:5000"
    assert RegistryClient("[::1]:5000").base_url == "http://[::1]:5000"
    assert RegistryClient("ghcr.io").base_url == "https://ghcr.io"
    assert RegistryClient("docker.io").base_url == "https://registry-1.docker.io"
    assert RegistryClient("index.docker.io").registry == "docker.io"
    assert RegistryClient("127.0.0.1:5000", scheme="https").base_url == "https://127.0.0.1:5000"


def test_a_broken_streamed_blob_copy_restarts_with_a_new_upload(sleeps: list[float]) -> None:
    blob = b"layer-bytes" * 1000
    blob_digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "c", "digest": blob_digest, "size": len(blob)},
            "layers": [],
        }
    ).encode()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()

    def source_handler(request: httpx.Request) -> httpx.Response:
        if "/manifests/" in request.url.path:
            return httpx.Response(200, headers={"Content-Type": DOCKER_MANIFEST}, content=raw)
        return httpx.Response(200, content=blob)

    puts: list[httpx.Request] = []

    def destination_handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "HEAD":
            return httpx.Response(404)
        if request.method == "POST":
            upload = f"/v2/app/blobs/uploads/u{len(puts)}?_state=s{len(puts)}"
            return httpx.Response(202, headers={"Location": upload})
        if request.method == "PUT" and "/blobs/uploads/" in path:
            puts.append(request)
            assert request.read() == blob
            if len(puts) == 1:
                return httpx.Response(503)
            return httpx.Response(201, headers={"Docker-Content-Digest": blob_digest})
        assert request.method == "PUT" and path == "/v2/app/manifests/v1"
        return httpx.Response(201, headers={"Docker-Content-Digest": digest})

    source = RegistryClient("source.example.test", transport=httpx.MockTransport(source_handler))
    logged: list[str] = []
    destination = client(destination_handler, backoff=0, log=logged.append)
    copied = destination.copy(
        ImageRef.parse(f"source.example.test/app@{digest}"),
        ImageRef.parse(f"{REGISTRY}/app:v1"),
        source=source,
    )
    assert copied == ImageRef(REGISTRY, "app", "v1", digest)
    assert [(p.url.params["_state"], p.url.params["digest"]) for p in puts] == [
        ("s0", blob_digest),
        ("s1", blob_digest),
    ]
    assert any(line.startswith(f"copied blob {blob_digest}") for line in logged)
