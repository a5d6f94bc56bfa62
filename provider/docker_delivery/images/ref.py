"""OCI image references: parsing, normalisation and formatting.

This module implements the reference grammar of Docker's ``distribution/reference`` package
(the one ``docker pull`` uses), with a few deliberate tightenings for a delivery tool:

* digests must be ``sha256`` (64 hex characters) or ``sha512`` (128 hex characters), lower-case;
* a registry port must be 1-65535 and is written without leading zeros;
* registry host labels are at most 63 characters;
* nothing is stripped silently: surrounding whitespace is an error.

Grammar (``distribution/reference``)::

    reference       := name [ ":" tag ] [ "@" digest ]
    name            := [ domain "/" ] path-component [ "/" path-component ]*
    domain          := host [ ":" port ]
    host            := domain-label [ "." domain-label ]* | "[" ipv6-address "]"
    domain-label    := /[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]/
    path-component  := /[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*/
    tag             := /[\\w][\\w.-]{0,127}/
    digest          := algorithm ":" hex

The first ``/``-separated component of a name is a registry when it contains ``.`` or ``:``, is
``localhost``, or contains an upper-case letter; otherwise the name lives on Docker Hub
(``docker.io``), and a single-component Docker Hub repository gets the ``library/`` prefix.
``index.docker.io`` is normalised to ``docker.io``. The total length of the normalised name
(``registry/repository``) is at most 255 characters.

This is pure domain code: it must never import airflow.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Final

from docker_delivery.errors import InvalidReference

__all__ = [
    "DEFAULT_REGISTRY",
    "DEFAULT_TAG",
    "NAME_TOTAL_LENGTH_MAX",
    "SUPPORTED_DIGEST_ALGORITHMS",
    "TAG_LENGTH_MAX",
    "ImageRef",
    "parse_digest",
]

DEFAULT_REGISTRY: Final = "docker.io"
"""The registry of names that do not name one (Docker Hub)."""

LEGACY_DEFAULT_REGISTRY: Final = "index.docker.io"
"""The old name of Docker Hub's registry; normalised to :data:`DEFAULT_REGISTRY`."""

OFFICIAL_REPO_PREFIX: Final = "library/"
"""The Docker Hub namespace of official images (``nginx`` is ``docker.io/library/nginx``)."""

DEFAULT_TAG: Final = "latest"
"""The tag Docker assumes when a reference has neither tag nor digest."""

NAME_TOTAL_LENGTH_MAX: Final = 255
MAX_LENGTH: Final = 1024  # a name (255), a tag (128) and a digest (sha512: 135) fit with room
"""Maximum length of the normalised name ``registry/repository``."""

TAG_LENGTH_MAX: Final = 128
"""Maximum length of a tag."""

HOST_LABEL_LENGTH_MAX: Final = 63
"""Maximum length of one dot-separated label of a registry host name (RFC 1035)."""

PORT_MAX: Final = 65535

SUPPORTED_DIGEST_ALGORITHMS: Final[dict[str, int]] = {"sha256": 64, "sha512": 128}
"""The digest algorithms accepted, each with the number of hex characters of its digests."""

_LOCALHOST: Final = "localhost"

_PATH_COMPONENT: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_PATH_CHARACTERS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
_PATH_SEPARATOR_RUN: Final = re.compile(r"[._-]+")
_PATH_SEPARATOR: Final = re.compile(r"[._]|__|-+")

_TAG_FIRST_CHARACTERS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
)
_TAG_CHARACTERS: Final = _TAG_FIRST_CHARACTERS | frozenset(".-")

_HOST_LABEL_CHARACTERS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"
)
_IPV6_CHARACTERS: Final = frozenset("0123456789abcdefABCDEF:")
_PORT: Final = re.compile(r"[0-9]+")

_HEX_CHARACTERS: Final = frozenset("0123456789abcdefABCDEF")
_IMAGE_ID: Final = re.compile(r"[a-f0-9]{64}")

_UPPER_CASE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SUPPORTED_ALGORITHMS_TEXT: Final = " or ".join(SUPPORTED_DIGEST_ALGORITHMS)


@dataclass(frozen=True)
class ImageRef:
    """A parsed, normalised OCI image reference.

    Build one with :meth:`parse`; constructing one directly validates and normalises the fields
    the same way (``ImageRef("index.docker.io", "nginx")`` is ``docker.io/library/nginx``).
    Two references are equal when their normalised fields are equal, so ``nginx`` equals
    ``docker.io/library/nginx``, but ``nginx`` does not equal ``nginx:latest``.
    """

    registry: str
    """Registry host with optional ``:port``, e.g. ``docker.io``, ``localhost:5000``,
    ``[::1]:5000``."""

    repository: str
    """Repository path inside the registry, e.g. ``library/nginx``, ``org/app``."""

    tag: str | None = None
    """The tag, or ``None``; ``latest`` is never implied (see :attr:`tag_or_latest`)."""

    digest: str | None = None
    """The content digest ``algorithm:hex``, or ``None``."""

    def __post_init__(self) -> None:
        reference = _format(self.registry, self.repository, self.tag, self.digest)
        registry, repository = _normalise_name(self.registry, self.repository, reference)
        object.__setattr__(self, "registry", registry)
        object.__setattr__(self, "repository", repository)
        if self.tag is not None:
            _check_tag(self.tag, reference)
        if self.digest is not None:
            _check_digest(self.digest, reference)

    # -- parsing -------------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse ``text`` as Docker does and return the normalised reference.

        Raises :class:`~docker_delivery.errors.InvalidReference` naming the problem when
        ``text`` is not a valid reference.
        """
        if not isinstance(text, str):
            raise InvalidReference(
                repr(text), f"reference must be a string, got {type(text).__name__}"
            )
        if not text:
            raise InvalidReference(text, "reference is empty")
        if text.strip() != text:
            if not text.strip():
                raise InvalidReference(text, "reference is only whitespace")
            raise InvalidReference(text, "reference has leading or trailing whitespace")
        scheme, sep, _ = text.partition("://")
        if sep and scheme.isalnum():
            raise InvalidReference(
                text,
                f"an image reference has no scheme: write it without '{scheme}://' "
                "(registry/repository, e.g. registry.example.com/shop/web)",
            )
        if len(text) > MAX_LENGTH:
            raise InvalidReference(text, f"longer than {MAX_LENGTH} characters")
        if _IMAGE_ID.fullmatch(text):
            raise InvalidReference(
                text,
                "a bare 64-character hex string is an image ID, not a repository name",
            )

        remainder, at, digest_text = text.partition("@")
        digest: str | None = None
        if at:
            if "@" in digest_text:
                raise InvalidReference(text, "reference contains more than one '@'")
            digest = digest_text

        name, tag = _split_tag(remainder)
        if not name:
            raise InvalidReference(text, "repository name is empty")

        slash = name.find("/")
        if slash != -1 and _looks_like_registry(name[:slash]):
            registry, repository = name[:slash], name[slash + 1 :]
        else:
            registry, repository = DEFAULT_REGISTRY, name
        registry, repository = _normalise_name(registry, repository, text)

        if tag is not None:
            _check_tag(tag, text)
        if digest is not None:
            _check_digest(digest, text)
        return cls(registry, repository, tag, digest)

    # -- formatting ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The fully-qualified name without tag or digest: ``registry/repository``."""
        return f"{self.registry}/{self.repository}"

    @property
    def canonical(self) -> str:
        """The fully-qualified form ``registry/repository[:tag][@digest]``."""
        return _format(self.registry, self.repository, self.tag, self.digest)

    @property
    def familiar_name(self) -> str:
        """Docker's short form of :attr:`name` (``nginx``, ``user/app``, ``ghcr.io/org/app``).

        The ``docker.io/`` prefix is kept whenever dropping it would make the short form parse
        as something else (``docker.io/foo.bar/app``, ``docker.io/localhost/app``).
        """
        if self.registry != DEFAULT_REGISTRY:
            return self.name
        path = self.repository
        if path.startswith(OFFICIAL_REPO_PREFIX):
            short = path[len(OFFICIAL_REPO_PREFIX) :]
            if "/" not in short:
                return self.name if _IMAGE_ID.fullmatch(short) else short
        if _looks_like_registry(path.split("/", 1)[0]):
            return self.name
        return path

    @property
    def familiar(self) -> str:
        """Docker's short form: ``nginx:1.25``, ``user/app``, ``127.0.0.1:5000/app@sha256:...``.

        It always parses back to an equal reference.
        """
        return _with_suffix(self.familiar_name, self.tag, self.digest)

    def __str__(self) -> str:
        return self.canonical

    # -- queries -------------------------------------------------------------------------------

    @property
    def is_pinned(self) -> bool:
        """True when the reference names content by digest."""
        return self.digest is not None

    @property
    def tag_or_latest(self) -> str:
        """The tag, or ``latest`` (what Docker assumes) when there is none."""
        return self.tag if self.tag is not None else DEFAULT_TAG

    # -- derived references ----------------------------------------------------------------------

    def with_tag(self, tag: str) -> ImageRef:
        """The same repository at ``tag``, without digest (a tag moves, a digest does not)."""
        _check_tag(tag, _format(self.registry, self.repository, tag, None))
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> ImageRef:
        """The same repository pinned to ``digest``; the tag is kept for readability."""
        digest = parse_digest(
            digest, reference=_format(self.registry, self.repository, self.tag, digest)
        )
        return replace(self, digest=digest)

    def without_tag(self) -> ImageRef:
        """The same reference without its tag (the digest, if any, is kept)."""
        return replace(self, tag=None)

    def require_pinned(self) -> ImageRef:
        """Return ``self`` when pinned by digest; raise :class:`InvalidReference` otherwise."""
        if self.digest is None:
            raise InvalidReference(
                self.canonical,
                f"{self.familiar} is not pinned by digest; deploy and promote only "
                "digest-pinned references (repository@sha256:...)",
            )
        return self


def parse_digest(text: str, *, reference: str | None = None) -> str:
    """Validate a bare digest (``sha256:<64 hex>`` or ``sha512:<128 hex>``) and return it.

    ``reference`` is the reference reported in the error (default: ``text`` itself).
    """
    return _check_digest(text, text if reference is None else reference)


# -- helpers ---------------------------------------------------------------------------------


def _format(registry: str, repository: str, tag: str | None, digest: str | None) -> str:
    return _with_suffix(f"{registry}/{repository}", tag, digest)


def _with_suffix(name: str, tag: str | None, digest: str | None) -> str:
    if tag is not None:
        name = f"{name}:{tag}"
    if digest is not None:
        name = f"{name}@{digest}"
    return name


def _split_tag(remainder: str) -> tuple[str, str | None]:
    """Split ``name[:tag]``: the tag follows the last ``:`` that comes after the last ``/``."""
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        return remainder[:colon], remainder[colon + 1 :]
    return remainder, None


def _looks_like_registry(component: str) -> bool:
    """Docker's rule: is the first component of a name a registry rather than a namespace?"""
    return (
        "." in component
        or ":" in component
        or component == _LOCALHOST
        or component.lower() != component
    )


def _normalise_name(registry: str, repository: str, reference: str) -> tuple[str, str]:
    """Validate ``registry`` and ``repository`` and return their normalised forms."""
    registry = _check_registry(registry, reference)
    if not _looks_like_registry(registry):
        raise InvalidReference(
            reference,
            f"registry {registry!r} would be read as a Docker Hub namespace; a registry must "
            "contain '.' or ':', be 'localhost', or contain an upper-case letter",
        )
    _check_repository(repository, reference)
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = OFFICIAL_REPO_PREFIX + repository
    length = len(registry) + 1 + len(repository)
    if length > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(
            reference,
            f"name longer than {NAME_TOTAL_LENGTH_MAX} characters (got {length})",
        )
    return registry, repository


def _check_registry(registry: str, reference: str) -> str:
    """Validate ``host[:port]`` and return it normalised (``index.docker.io`` -> ``docker.io``)."""
    if not registry:
        raise InvalidReference(reference, "registry is empty")
    port: str | None
    if registry.startswith("["):
        end = registry.find("]")
        if end == -1:
            raise InvalidReference(
                reference, f"registry {registry!r} has '[' without a closing ']'"
            )
        _check_ipv6(registry[1:end], reference)
        rest = registry[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidReference(
                reference,
                f"unexpected {rest!r} after the IPv6 address in registry {registry!r}",
            )
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = registry.partition(":")
        if ":" in port_text:
            raise InvalidReference(
                reference,
                f"registry {registry!r} has more than one ':'; "
                "write IPv6 addresses in brackets, e.g. [::1]:5000",
            )
        _check_hostname(host, reference)
        port = port_text if colon else None
    if port is not None:
        _check_port(port, reference)
    if registry == LEGACY_DEFAULT_REGISTRY:
        return DEFAULT_REGISTRY
    return registry


def _check_hostname(host: str, reference: str) -> None:
    if not host:
        raise InvalidReference(reference, "registry host is empty")
    for label in host.split("."):
        if not label:
            raise InvalidReference(reference, f"registry host {host!r} has an empty label")
        for character in label:
            if character not in _HOST_LABEL_CHARACTERS:
                raise InvalidReference(
                    reference,
                    f"registry host {host!r} contains invalid character {character!r}",
                )
        if label.startswith("-") or label.endswith("-"):
            raise InvalidReference(
                reference,
                f"registry host label {label!r} must not start or end with a hyphen",
            )
        if len(label) > HOST_LABEL_LENGTH_MAX:
            raise InvalidReference(
                reference,
                f"registry host label longer than {HOST_LABEL_LENGTH_MAX} characters "
                f"(got {len(label)})",
            )


def _check_ipv6(address: str, reference: str) -> None:
    problem = f"registry host [{address}] is not a valid IPv6 address"
    if not address or not set(address) <= _IPV6_CHARACTERS:
        raise InvalidReference(reference, problem)
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        raise InvalidReference(reference, problem) from None


def _check_port(port: str, reference: str) -> None:
    if not port:
        raise InvalidReference(reference, "port is empty")
    if not _PORT.fullmatch(port):
        raise InvalidReference(reference, f"port must be numeric, got {port!r}")
    if len(port) > len(str(PORT_MAX)) or not 1 <= int(port) <= PORT_MAX:
        raise InvalidReference(reference, f"port must be 1-{PORT_MAX}, got {port}")
    if port.startswith("0"):
        raise InvalidReference(reference, f"port must not have leading zeros, got {port!r}")


def _check_repository(repository: str, reference: str) -> None:
    if not repository:
        raise InvalidReference(reference, "repository name is empty")
    if any(character in _UPPER_CASE for character in repository):
        raise InvalidReference(reference, f"repository must be lower-case: {repository!r}")
    for component in repository.split("/"):
        _check_path_component(component, reference)


def _check_path_component(component: str, reference: str) -> None:
    if _PATH_COMPONENT.fullmatch(component):
        return
    if not component:
        raise InvalidReference(reference, "empty path component")
    for character in component:
        if character not in _PATH_CHARACTERS:
            raise InvalidReference(
                reference,
                f"path component {component!r} contains invalid character {character!r}",
            )
    if not component[0].isalnum():
        raise InvalidReference(
            reference, f"path component {component!r} must start with a letter or digit"
        )
    if not component[-1].isalnum():
        raise InvalidReference(
            reference, f"path component {component!r} must end with a letter or digit"
        )
    for run in _PATH_SEPARATOR_RUN.findall(component):
        if not _PATH_SEPARATOR.fullmatch(run):
            raise InvalidReference(
                reference,
                f"path component {component!r} contains invalid separator {run!r}; "
                "separate words with '.', '_', '__' or a run of '-'",
            )
    raise InvalidReference(reference, f"invalid path component {component!r}")  # unreachable


def _check_tag(tag: str, reference: str) -> None:
    if not tag:
        raise InvalidReference(reference, "tag is empty")
    if len(tag) > TAG_LENGTH_MAX:
        raise InvalidReference(
            reference, f"tag longer than {TAG_LENGTH_MAX} characters (got {len(tag)})"
        )
    for character in tag:
        if character not in _TAG_CHARACTERS:
            raise InvalidReference(
                reference, f"tag {tag!r} contains invalid character {character!r}"
            )
    if tag[0] not in _TAG_FIRST_CHARACTERS:
        raise InvalidReference(
            reference,
            f"tag must start with a letter, digit or underscore, got {tag[0]!r}",
        )


def _check_digest(digest: str, reference: str) -> str:
    if not digest:
        raise InvalidReference(reference, "digest is empty")
    algorithm, colon, encoded = digest.partition(":")
    if not colon or not algorithm:
        raise InvalidReference(
            reference, "digest has no algorithm; expected 'sha256:<64 hex characters>'"
        )
    length = SUPPORTED_DIGEST_ALGORITHMS.get(algorithm)
    if length is None:
        raise InvalidReference(
            reference,
            f"digest algorithm {algorithm!r} is not supported; use {_SUPPORTED_ALGORITHMS_TEXT}",
        )
    for character in encoded:
        if character not in _HEX_CHARACTERS:
            raise InvalidReference(
                reference, f"{algorithm} digest contains non-hex character {character!r}"
            )
    if encoded != encoded.lower():
        raise InvalidReference(reference, f"{algorithm} digest must be lower-case hex")
    if len(encoded) != length:
        raise InvalidReference(
            reference,
            f"{algorithm} digest must be {length} lower-case hex characters, got {len(encoded)}",
        )
    return digest
