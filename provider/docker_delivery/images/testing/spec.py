"""What an image test runs: the command and its sidecars; the run id that names their objects."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from docker_delivery.errors import InvalidTestSpec
from docker_delivery.images.ref import ImageRef

RUN_ID_LENGTH_MAX: Final = 63
"""Run ids longer than this (after sanitising) are shortened and suffixed with a hash."""

_NAME: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_NOT_NAME_CHARACTER: Final = re.compile(r"[^a-zA-Z0-9_.-]+")

ProbeFrom = Literal["auto", "host", "network"]


@dataclass(frozen=True)
class Sidecar:
    """A container started next to the tests, reachable from them as the host ``name``.

    With ``wait_for_port``, the tests start only once the sidecar accepts TCP connections on that
    port (within ``wait_timeout`` seconds). ``command`` replaces the image's CMD.
    """

    name: str
    image: str
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    wait_for_port: int | None = None
    wait_timeout: float = 60

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise InvalidTestSpec(
                f"sidecar name {self.name!r} is not a valid host name: use letters, digits, "
                "'_', '.' and '-', starting with a letter or digit"
            )
        ImageRef.parse(self.image)
        if self.command is not None:
            _check_argv(self.command, f"sidecar {self.name!r} command")
        _check_env(self.env, f"sidecar {self.name!r} env")
        if self.wait_for_port is not None and not 1 <= self.wait_for_port <= 65535:
            raise InvalidTestSpec(
                f"sidecar {self.name!r}: wait_for_port must be 1-65535, got {self.wait_for_port}"
            )
        if self.wait_timeout <= 0:
            raise InvalidTestSpec(f"sidecar {self.name!r}: wait_timeout must be positive")

    @classmethod
    def coerce(cls, value: Sidecar | Mapping[str, Any]) -> Sidecar:
        """``value`` itself, or a :class:`Sidecar` built from a mapping of its fields."""
        if isinstance(value, Sidecar):
            return value
        if isinstance(value, Mapping):
            try:
                return cls(**value)
            except TypeError as error:
                raise InvalidTestSpec(f"invalid sidecar {dict(value)!r}: {error}") from None
        raise InvalidTestSpec(
            f"a sidecar must be a Sidecar or a mapping of its fields, got {type(value).__name__}"
        )


@dataclass(frozen=True)
class ImageTest:
    """One test command to run in a container of a digest-pinned image.

    ``command`` is an argv list; a string is run by ``/bin/sh -c`` and needs ``shell=True``. It
    replaces the image's CMD; the image's ENTRYPOINT, if any, runs with it as arguments, as with
    ``docker run``. ``junit_path`` is where the command writes a JUnit XML report inside the
    container (a file, or a directory of ``*.xml`` files); without it, only the exit code counts.
    """

    image: str
    command: list[str] | str
    shell: bool = False
    env: dict[str, str] = field(default_factory=dict)
    sidecars: tuple[Sidecar, ...] = ()
    timeout: float = 1800
    junit_path: str | None = None
    workdir: str | None = None
    user: str | None = None

    def __post_init__(self) -> None:
        ImageRef.parse(self.image).require_pinned()
        if isinstance(self.command, str):
            if not self.shell:
                raise InvalidTestSpec(
                    f"command {self.command!r} is a string: pass an argv list "
                    "(e.g. ['python3', '-m', 'pytest']) or set shell=True to run it with /bin/sh -c"
                )
            if not self.command.strip():
                raise InvalidTestSpec("command is empty")
        else:
            if self.shell:
                raise InvalidTestSpec(
                    "shell=True takes the command as one string (a shell script line); "
                    "pass a string, or an argv list with shell=False"
                )
            _check_argv(self.command, "command")
        _check_env(self.env, "env")
        sidecars = tuple(Sidecar.coerce(sidecar) for sidecar in self.sidecars)
        object.__setattr__(self, "sidecars", sidecars)
        names = [sidecar.name for sidecar in sidecars]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise InvalidTestSpec(f"sidecar names must be unique; repeated: {duplicates}")
        if self.timeout <= 0:
            raise InvalidTestSpec(f"timeout must be positive, got {self.timeout}")
        if self.junit_path is not None and not self.junit_path.startswith("/"):
            raise InvalidTestSpec(
                f"junit_path must be an absolute path inside the container, got {self.junit_path!r}"
            )

    @property
    def argv(self) -> list[str]:
        """The container command: ``command`` itself, or ``/bin/sh -c command``."""
        if isinstance(self.command, str):
            return ["/bin/sh", "-c", self.command]
        return list(self.command)

    @property
    def pinned_image(self) -> str:
        """The image by digest only (a tag next to a digest is ignored by Docker anyway)."""
        return str(ImageRef.parse(self.image).without_tag())


def _check_argv(argv: object, what: str) -> None:
    if not isinstance(argv, (list, tuple)) or not all(isinstance(arg, str) for arg in argv):
        raise InvalidTestSpec(f"{what} must be a list of strings, got {argv!r}")
    if not argv:
        raise InvalidTestSpec(f"{what} is empty")


def _check_env(env: object, what: str) -> None:
    if not isinstance(env, Mapping) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in env.items()
    ):
        raise InvalidTestSpec(f"{what} must map strings to strings, got {env!r}")


def safe_run_id(run_id: str) -> str:
    """``run_id`` as usable in Docker object names; distinct inputs stay distinct.

    A run id that is already a valid name of at most 63 characters is kept; any other is
    sanitised, shortened and suffixed with a hash of the original.
    """
    if not isinstance(run_id, str) or not run_id:
        raise InvalidTestSpec(f"run id must be a non-empty string, got {run_id!r}")
    if _NAME.fullmatch(run_id) and len(run_id) <= RUN_ID_LENGTH_MAX:
        return run_id
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    slug = _NOT_NAME_CHARACTER.sub("-", run_id).strip("-._")[: RUN_ID_LENGTH_MAX - 9]
    return f"{slug}-{digest}" if slug else digest
