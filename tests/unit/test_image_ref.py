"""Tests of docker_delivery.images.ref: the OCI image reference parser."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import docker_delivery
from docker_delivery.errors import DeliveryError, InvalidReference
from docker_delivery.images.ref import ImageRef, parse_digest

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA256_B = "sha256:" + "fedcba9876543210" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8
HEX64 = "a1b2c3d4" * 8


# -- normalisation table ---------------------------------------------------------------------

# input, registry, repository, tag, digest, familiar, canonical
NORMALISATION_CASES: list[tuple[str, str, str, str | None, str | None, str, str]] = [
    ("nginx", "docker.io", "library/nginx", None, None, "nginx", "docker.io/library/nginx"),
    (
        "nginx:1.25",
        "docker.io",
        "library/nginx",
        "1.25",
        None,
        "nginx:1.25",
        "docker.io/library/nginx:1.25",
    ),
    ("library/nginx", "docker.io", "library/nginx", None, None, "nginx", "docker.io/library/nginx"),
    (
        "docker.io/nginx",
        "docker.io",
        "library/nginx",
        None,
        None,
        "nginx",
        "docker.io/library/nginx",
    ),
    (
        "docker.io/library/nginx:latest",
        "docker.io",
        "library/nginx",
        "latest",
        None,
        "nginx:latest",
        "docker.io/library/nginx:latest",
    ),
    ("index.docker.io/library/x", "docker.io", "library/x", None, None, "x", "docker.io/library/x"),
    ("index.docker.io/x", "docker.io", "library/x", None, None, "x", "docker.io/library/x"),
    (
        "index.docker.io/user/app",
        "docker.io",
        "user/app",
        None,
        None,
        "user/app",
        "docker.io/user/app",
    ),
    ("user/app:1", "docker.io", "user/app", "1", None, "user/app:1", "docker.io/user/app:1"),
    ("user/app", "docker.io", "user/app", None, None, "user/app", "docker.io/user/app"),
    ("localhost/app", "localhost", "app", None, None, "localhost/app", "localhost/app"),
    (
        "localhost:5000/a/b:c",
        "localhost:5000",
        "a/b",
        "c",
        None,
        "localhost:5000/a/b:c",
        "localhost:5000/a/b:c",
    ),
    (
        f"127.0.0.1:5000/app@{SHA256}",
        "127.0.0.1:5000",
        "app",
        None,
        SHA256,
        f"127.0.0.1:5000/app@{SHA256}",
        f"127.0.0.1:5000/app@{SHA256}",
    ),
    (
        f"ghcr.io/org/app:v1@{SHA256}",
        "ghcr.io",
        "org/app",
        "v1",
        SHA256,
        f"ghcr.io/org/app:v1@{SHA256}",
        f"ghcr.io/org/app:v1@{SHA256}",
    ),
    ("[::1]:5000/app", "[::1]:5000", "app", None, None, "[::1]:5000/app", "[::1]:5000/app"),
    (
        "[2001:db8::1]/team/app:2.0",
        "[2001:db8::1]",
        "team/app",
        "2.0",
        None,
        "[2001:db8::1]/team/app:2.0",
        "[2001:db8::1]/team/app:2.0",
    ),
    ("MyRegistry/app", "MyRegistry", "app", None, None, "MyRegistry/app", "MyRegistry/app"),
    (
        "registry.example.com:443/a/b/c:tag_1",
        "registry.example.com:443",
        "a/b/c",
        "tag_1",
        None,
        "registry.example.com:443/a/b/c:tag_1",
        "registry.example.com:443/a/b/c:tag_1",
    ),
    (
        f"nginx@{SHA512}",
        "docker.io",
        "library/nginx",
        None,
        SHA512,
        f"nginx@{SHA512}",
        f"docker.io/library/nginx@{SHA512}",
    ),
    (
        "docker.io/library/a/b",
        "docker.io",
        "library/a/b",
        None,
        None,
        "library/a/b",
        "docker.io/library/a/b",
    ),
    # Dropping docker.io/ would turn the namespace into a registry, so the familiar form keeps it.
    (
        "docker.io/foo.bar/app",
        "docker.io",
        "foo.bar/app",
        None,
        None,
        "docker.io/foo.bar/app",
        "docker.io/foo.bar/app",
    ),
    (
        "docker.io/localhost/app",
        "docker.io",
        "localhost/app",
        None,
        None,
        "docker.io/localhost/app",
        "docker.io/localhost/app",
    ),
    (
        "a__b/c-d--e.f_g:Tag.1-x",
        "docker.io",
        "a__b/c-d--e.f_g",
        "Tag.1-x",
        None,
        "a__b/c-d--e.f_g:Tag.1-x",
        "docker.io/a__b/c-d--e.f_g:Tag.1-x",
    ),
    # Docker's quirk: without a '/', "localhost:5000" is the image "localhost" at tag "5000".
    (
        "localhost:5000",
        "docker.io",
        "library/localhost",
        "5000",
        None,
        "localhost:5000",
        "docker.io/library/localhost:5000",
    ),
    (
        "quay.io/my_org/my-app.v2:__init",
        "quay.io",
        "my_org/my-app.v2",
        "__init",
        None,
        "quay.io/my_org/my-app.v2:__init",
        "quay.io/my_org/my-app.v2:__init",
    ),
    (
        f"{HEX64}:v1",
        "docker.io",
        f"library/{HEX64}",
        "v1",
        None,
        f"docker.io/library/{HEX64}:v1",
        f"docker.io/library/{HEX64}:v1",
    ),
    (
        "localhost:65535/app",
        "localhost:65535",
        "app",
        None,
        None,
        "localhost:65535/app",
        "localhost:65535/app",
    ),
]


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "familiar", "canonical"),
    NORMALISATION_CASES,
    ids=[case[0][:40] for case in NORMALISATION_CASES],
)
def test_normalisation(
    text: str,
    registry: str,
    repository: str,
    tag: str | None,
    digest: str | None,
    familiar: str,
    canonical: str,
) -> None:
    ref = ImageRef.parse(text)
    assert ref.registry == registry
    assert ref.repository == repository
    assert ref.tag == tag
    assert ref.digest == digest
    assert ref.familiar == familiar
    assert ref.canonical == canonical
    assert str(ref) == canonical
    assert ref.name == f"{registry}/{repository}"
    assert ref == ImageRef(registry, repository, tag, digest)
    assert ImageRef.parse(canonical) == ref
    assert ImageRef.parse(familiar) == ref


def test_familiar_name_and_name() -> None:
    ref = ImageRef.parse(f"nginx:1.25@{SHA256}")
    assert ref.name == "docker.io/library/nginx"
    assert ref.familiar_name == "nginx"
    assert ImageRef.parse("ghcr.io/org/app:v1").familiar_name == "ghcr.io/org/app"


def test_equivalent_spellings_are_equal() -> None:
    spellings = [
        "nginx",
        "library/nginx",
        "docker.io/nginx",
        "docker.io/library/nginx",
        "index.docker.io/nginx",
        "index.docker.io/library/nginx",
    ]
    refs = {ImageRef.parse(text) for text in spellings}
    assert len(refs) == 1
    assert ImageRef.parse("nginx") != ImageRef.parse("nginx:latest")


def test_no_implicit_latest() -> None:
    ref = ImageRef.parse("nginx")
    assert ref.tag is None
    assert ref.tag_or_latest == "latest"
    assert ImageRef.parse("nginx:1.25").tag_or_latest == "1.25"
    assert ImageRef.parse(f"nginx@{SHA256}").tag_or_latest == "latest"


def test_direct_construction_normalises() -> None:
    ref = ImageRef("index.docker.io", "nginx")
    assert ref == ImageRef.parse("nginx")
    assert ref.registry == "docker.io"
    assert ref.repository == "library/nginx"


@pytest.mark.parametrize(
    ("registry", "repository", "tag", "digest", "reason"),
    [
        ("myhost", "app", None, None, "would be read as a Docker Hub namespace"),
        ("", "app", None, None, "registry is empty"),
        ("ghcr.io", "", None, None, "repository name is empty"),
        ("ghcr.io", "Org/app", None, None, "repository must be lower-case: 'Org/app'"),
        ("ghcr.io", "org/app", "", None, "tag is empty"),
        ("ghcr.io", "org/app", None, "sha1:abc", "digest algorithm 'sha1' is not supported"),
    ],
)
def test_direct_construction_validates(
    registry: str, repository: str, tag: str | None, digest: str | None, reason: str
) -> None:
    with pytest.raises(InvalidReference, match=re.escape(reason)):
        ImageRef(registry, repository, tag, digest)


# -- malformed references --------------------------------------------------------------------

MALFORMED_CASES: list[tuple[str, str]] = [
    ("", "reference is empty"),
    (" ", "reference is only whitespace"),
    (" nginx", "reference has leading or trailing whitespace"),
    ("nginx\n", "reference has leading or trailing whitespace"),
    ("\tnginx:1", "reference has leading or trailing whitespace"),
    ("ngi nx", "contains invalid character ' '"),
    ("MyApp", "repository must be lower-case: 'MyApp'"),
    ("user/MyApp:1", "repository must be lower-case: 'user/MyApp'"),
    ("ghcr.io/Org/app", "repository must be lower-case: 'Org/app'"),
    ("a//b", "empty path component"),
    ("app/", "empty path component"),
    ("/app", "empty path component"),
    ("localhost/", "repository name is empty"),
    ("docker.io/", "repository name is empty"),
    (f"app@md5:{'0' * 32}", "digest algorithm 'md5' is not supported; use sha256 or sha512"),
    (f"app@SHA256:{'0' * 64}", "digest algorithm 'SHA256' is not supported"),
    (f"app@sha256:{'a' * 63}", "sha256 digest must be 64 lower-case hex characters, got 63"),
    (f"app@sha256:{'a' * 65}", "sha256 digest must be 64 lower-case hex characters, got 65"),
    (f"app@sha256:{'a' * 128}", "sha256 digest must be 64 lower-case hex characters, got 128"),
    (f"app@sha512:{'a' * 127}", "sha512 digest must be 128 lower-case hex characters, got 127"),
    ("app@sha256:", "sha256 digest must be 64 lower-case hex characters, got 0"),
    (f"app@sha256:{'A' * 64}", "sha256 digest must be lower-case hex"),
    (f"app:v1@sha256:{'0123456789ABCDEF' * 4}", "sha256 digest must be lower-case hex"),
    (f"app@sha256:{'g' * 64}", "sha256 digest contains non-hex character 'g'"),
    (f"app@sha256:{'a' * 32}:{'a' * 31}", "sha256 digest contains non-hex character ':'"),
    (f"app@{'a' * 64}", "digest has no algorithm"),
    (f"app@:{'a' * 64}", "digest has no algorithm"),
    (f"app:{'a' * 129}", "tag longer than 128 characters (got 129)"),
    ("app:.v1", "tag must start with a letter, digit or underscore, got '.'"),
    ("app:-v1", "tag must start with a letter, digit or underscore, got '-'"),
    ("app:", "tag is empty"),
    ("app:v1!", "tag 'v1!' contains invalid character '!'"),
    ("app:t\u00e0g", "tag 't\u00e0g' contains invalid character '\u00e0'"),
    ("app@", "digest is empty"),
    ("app:v1@", "digest is empty"),
    ("app!", "path component 'app!' contains invalid character '!'"),
    ("app:v1:v2", "path component 'app:v1' contains invalid character ':'"),
    ("a..b", "path component 'a..b' contains invalid separator '..'"),
    ("a._b", "path component 'a._b' contains invalid separator '._'"),
    ("a___b", "path component 'a___b' contains invalid separator '___'"),
    ("a--", "path component 'a--' must end with a letter or digit"),
    ("org/app.", "path component 'app.' must end with a letter or digit"),
    ("-a", "path component '-a' must start with a letter or digit"),
    ("_a/b", "path component '_a' must start with a letter or digit"),
    ("localhost:0/app", "port must be 1-65535, got 0"),
    ("localhost:70000/app", "port must be 1-65535, got 70000"),
    (f"localhost:{'9' * 5000}/app", "longer than 1024 characters"),
    ("localhost:abc/app", "port must be numeric, got 'abc'"),
    ("localhost:/app", "port is empty"),
    ("localhost:05000/app", "port must not have leading zeros, got '05000'"),
    ("a" * 256, "name longer than 255 characters (got 274)"),
    (f"ghcr.io/{'a' * 248}", "name longer than 255 characters (got 256)"),
    (f"@{SHA256}", "repository name is empty"),
    (f"app@{SHA256}@{SHA256_B}", "reference contains more than one '@'"),
    (":tag", "repository name is empty"),
    (":", "repository name is empty"),
    ("@", "repository name is empty"),
    (HEX64, "a bare 64-character hex string is an image ID"),
    ("exa_mple.com/app", "registry host 'exa_mple.com' contains invalid character '_'"),
    ("-example.com/app", "registry host label '-example' must not start or end with a hyphen"),
    ("example-.com/app", "registry host label 'example-' must not start or end with a hyphen"),
    ("example..com/app", "registry host 'example..com' has an empty label"),
    (".example.com/app", "registry host '.example.com' has an empty label"),
    (f"{'a' * 64}.com/app", "registry host label longer than 63 characters (got 64)"),
    (":5000/app", "registry host is empty"),
    ("[::1/app", "registry '[::1' has '[' without a closing ']'"),
    ("[zz::1]/app", "registry host [zz::1] is not a valid IPv6 address"),
    ("[1:2:3:4:5:6:7:8:9]/app", "is not a valid IPv6 address"),
    ("[]:5000/app", "registry host [] is not a valid IPv6 address"),
    ("[::1]x/app", "unexpected 'x' after the IPv6 address in registry '[::1]x'"),
    ("[::1]:0/app", "port must be 1-65535, got 0"),
    ("::1/app", "registry '::1' has more than one ':'; write IPv6 addresses in brackets"),
    ("\u00c9cole/app", "registry host '\u00c9cole' contains invalid character '\u00c9'"),
]


@pytest.mark.parametrize(
    ("text", "reason"), MALFORMED_CASES, ids=[repr(case[0])[:40] for case in MALFORMED_CASES]
)
def test_malformed(text: str, reason: str) -> None:
    with pytest.raises(InvalidReference, match=re.escape(reason)) as caught:
        ImageRef.parse(text)
    assert caught.value.reference == text
    assert reason in caught.value.reason


def test_error_types() -> None:
    with pytest.raises(InvalidReference) as caught:
        ImageRef.parse("Bad")
    assert isinstance(caught.value, DeliveryError)
    assert isinstance(caught.value, ValueError)
    assert (
        str(caught.value) == "invalid image reference 'Bad': repository must be lower-case: 'Bad'"
    )


def test_non_string_is_rejected() -> None:
    with pytest.raises(InvalidReference, match="reference must be a string, got int"):
        ImageRef.parse(42)  # type: ignore[arg-type]


def test_longest_name_is_accepted() -> None:
    ref = ImageRef.parse(f"ghcr.io/{'a' * 247}")
    assert len(ref.name) == 255
    with pytest.raises(InvalidReference, match=re.escape("(got 256)")):
        ImageRef.parse(f"ghcr.io/{'a' * 248}")


def test_longest_tag_is_accepted() -> None:
    assert ImageRef.parse(f"app:{'a' * 128}").tag == "a" * 128


# -- derived references ----------------------------------------------------------------------


def test_with_tag_drops_digest() -> None:
    ref = ImageRef.parse(f"ghcr.io/org/app:v1@{SHA256}")
    moved = ref.with_tag("v2")
    assert moved == ImageRef.parse("ghcr.io/org/app:v2")
    assert moved.digest is None
    assert not moved.is_pinned
    assert ref.tag == "v1"  # the original is unchanged (frozen)


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ("", "tag is empty"),
        (".v1", "tag must start with a letter, digit or underscore"),
        ("v/1", "contains invalid character '/'"),
        ("a" * 129, "tag longer than 128 characters"),
    ],
)
def test_with_tag_validates(tag: str, reason: str) -> None:
    with pytest.raises(InvalidReference, match=re.escape(reason)) as caught:
        ImageRef.parse("ghcr.io/org/app").with_tag(tag)
    assert caught.value.reference == f"ghcr.io/org/app:{tag}"


def test_with_digest_keeps_tag() -> None:
    ref = ImageRef.parse("ghcr.io/org/app:v1")
    pinned = ref.with_digest(SHA256)
    assert pinned.tag == "v1"
    assert pinned.digest == SHA256
    assert pinned.is_pinned
    assert str(pinned) == f"ghcr.io/org/app:v1@{SHA256}"
    assert pinned.with_digest(SHA512).digest == SHA512


@pytest.mark.parametrize(
    ("digest", "reason"),
    [
        ("", "digest is empty"),
        ("md5:" + "0" * 32, "digest algorithm 'md5' is not supported; use sha256 or sha512"),
        ("sha256:" + "0" * 63, "sha256 digest must be 64 lower-case hex characters, got 63"),
        ("sha256:" + "F" * 64, "sha256 digest must be lower-case hex"),
        ("0" * 64, "digest has no algorithm"),
    ],
)
def test_with_digest_validates(digest: str, reason: str) -> None:
    with pytest.raises(InvalidReference, match=re.escape(reason)):
        ImageRef.parse("ghcr.io/org/app:v1").with_digest(digest)
    with pytest.raises(InvalidReference, match=re.escape(reason)) as caught:
        parse_digest(digest)
    assert caught.value.reference == digest


def test_parse_digest_accepts_supported_digests() -> None:
    assert parse_digest(SHA256) == SHA256
    assert parse_digest(SHA512) == SHA512


def test_without_tag() -> None:
    ref = ImageRef.parse(f"ghcr.io/org/app:v1@{SHA256}")
    assert ref.without_tag() == ImageRef.parse(f"ghcr.io/org/app@{SHA256}")
    assert ImageRef.parse("nginx:1").without_tag() == ImageRef.parse("nginx")


def test_is_pinned_and_require_pinned() -> None:
    pinned = ImageRef.parse(f"ghcr.io/org/app@{SHA256}")
    assert pinned.is_pinned
    assert pinned.require_pinned() is pinned

    unpinned = ImageRef.parse("ghcr.io/org/app:v1")
    assert not unpinned.is_pinned
    with pytest.raises(InvalidReference, match="is not pinned by digest") as caught:
        unpinned.require_pinned()
    assert caught.value.reference == "ghcr.io/org/app:v1"
    assert "deploy and promote only digest-pinned references (repository@sha256:...)" in (
        caught.value.reason
    )


def test_refs_are_frozen_and_hashable() -> None:
    ref = ImageRef.parse("nginx")
    with pytest.raises(AttributeError):
        ref.tag = "x"  # type: ignore[misc]
    assert {ref: 1}[ImageRef.parse("docker.io/library/nginx")] == 1


def test_module_never_imports_airflow() -> None:
    package_root = Path(docker_delivery.__file__).resolve().parents[1]
    code = (
        "import sys, docker_delivery.images.ref; "
        "leaked = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')); "
        "assert not leaked, leaked"
    )
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# -- property-based round trips --------------------------------------------------------------

_ALNUM = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_SEPARATOR = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def path_components(draw: st.DrawFn) -> str:
    """``[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*``"""
    words = draw(st.lists(_ALNUM, min_size=1, max_size=4))
    component = words[0]
    for word in words[1:]:
        component += draw(_SEPARATOR) + word
    return component


repositories = st.lists(path_components(), min_size=1, max_size=4).map("/".join)

_HOST_LABEL = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)
_PORTS = st.integers(min_value=1, max_value=65535).map(str)


@st.composite
def registries(draw: st.DrawFn) -> str:
    """Registries that Docker's rule recognises as such, other than Docker Hub."""
    kind = draw(st.sampled_from(["dns", "single-label", "localhost", "ipv4", "ipv6"]))
    port = draw(st.none() | _PORTS)
    if kind == "dns":
        host = ".".join(draw(st.lists(_HOST_LABEL, min_size=2, max_size=4)))
    elif kind == "single-label":
        # A single label is only a registry with a port or an upper-case letter.
        host = draw(_HOST_LABEL)
        if port is None and host.lower() == host:
            port = draw(_PORTS)
    elif kind == "localhost":
        host = "localhost"
    elif kind == "ipv4":
        host = str(draw(st.ip_addresses(v=4)))
    else:
        address = draw(st.ip_addresses(v=6).map(str).filter(lambda text: "." not in text))
        host = f"[{address}]"
    registry = host if port is None else f"{host}:{port}"
    if registry.lower() in ("docker.io", "index.docker.io"):
        registry = "example.com"
    return registry


tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", fullmatch=True)
digests = st.one_of(
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map("sha256:".__add__),
    st.text(alphabet="0123456789abcdef", min_size=128, max_size=128).map("sha512:".__add__),
)


def _suffix(tag: str | None, digest: str | None) -> str:
    return (f":{tag}" if tag is not None else "") + (f"@{digest}" if digest is not None else "")


@given(
    registry=registries(),
    repository=repositories,
    tag=st.none() | tags,
    digest=st.none() | digests,
)
@example(registry="[::1]:5000", repository="app", tag=None, digest=None)
@example(registry="localhost", repository="a/b", tag="_", digest=None)
def test_round_trip_explicit_registry(
    registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    text = f"{registry}/{repository}{_suffix(tag, digest)}"
    ref = ImageRef.parse(text)
    assert ref == ImageRef(registry, repository, tag, digest)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert str(ref) == text
    assert ref.familiar == text
    assert ImageRef.parse(str(ref)) == ref
    assert ImageRef.parse(ref.familiar) == ref


@given(
    registry=st.sampled_from(["", "docker.io/", "index.docker.io/"]),
    repository=repositories,
    tag=st.none() | tags,
    digest=st.none() | digests,
)
def test_round_trip_docker_hub(
    registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    text = f"{registry}{repository}{_suffix(tag, digest)}"
    if "/" in repository and (
        "." in repository.split("/")[0] or repository.split("/")[0] == "localhost"
    ):
        # Without an explicit registry the first component would be read as the registry.
        registry = "docker.io/"
        text = f"{registry}{repository}{_suffix(tag, digest)}"
    ref = ImageRef.parse(text)
    expected_repository = repository if "/" in repository else f"library/{repository}"
    assert ref.registry == "docker.io"
    assert ref.repository == expected_repository
    assert (ref.tag, ref.digest) == (tag, digest)
    assert str(ref) == f"docker.io/{expected_repository}{_suffix(tag, digest)}"
    assert ImageRef.parse(str(ref)) == ref
    assert ImageRef.parse(ref.familiar) == ref


_REFERENCE_ALPHABET = st.sampled_from(
    [*"abcAZ019._-/:@[]", "sha256:", "localhost", "docker.io/", "library/", " ", "!"]
)


@given(st.lists(_REFERENCE_ALPHABET, max_size=20).map("".join))
@example("nginx")
@example("localhost:5000")
@example("a/b@sha256:" + "0" * 64)
def test_parse_either_succeeds_idempotently_or_raises_invalid_reference(text: str) -> None:
    try:
        ref = ImageRef.parse(text)
    except InvalidReference as error:
        assert error.reference == text
        assert error.reason
        return
    assert ImageRef.parse(str(ref)) == ref
    assert ImageRef.parse(ref.familiar) == ref
    assert str(ImageRef.parse(str(ref))) == str(ref)


@given(registry=registries(), repository=repositories, tag=tags, digest=digests)
def test_derived_references_round_trip(
    registry: str, repository: str, tag: str, digest: str
) -> None:
    ref = ImageRef.parse(f"{registry}/{repository}")
    pinned = ref.with_tag(tag).with_digest(digest)
    assert pinned == ImageRef.parse(f"{registry}/{repository}:{tag}@{digest}")
    assert pinned.require_pinned() is pinned
    assert pinned.with_tag(tag) == ref.with_tag(tag)
    assert pinned.without_tag().tag is None
    assert pinned.without_tag().digest == digest
