"""Test an image inside the image, by digest: a test container, its sidecars, a JUnit report.

Build once, test many times. :class:`ImageTestRunner` runs one :class:`ImageTest` — a command in
a container of a digest-pinned image, next to optional :class:`Sidecar` containers (a database, a
stub service) reachable by name on a private network — and returns a :class:`TestSummary` read
from the command's exit code and, when asked for, a JUnit XML report collected from the container.

Everything a run creates (network, sidecars, test container) carries the labels
``io.docker-delivery.managed=true``, ``io.docker-delivery.test-run=<run id>`` and
``io.docker-delivery.role``, and is removed when the run ends, whatever the outcome.
:meth:`ImageTestRunner.cleanup` removes the same objects by label, for a run that was killed
before it could clean up after itself; :meth:`ImageTestRunner.run` calls it first, so a retry under
the same run id starts from nothing. Runs with different run ids never share an object, so many
runs of the same image can go in parallel.

This is pure domain code: it must never import airflow.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import socket
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from docker_delivery.errors import DeliveryError
from docker_delivery.errors import InvalidJUnitReport as InvalidJUnitReport
from docker_delivery.errors import InvalidTestSpec as InvalidTestSpec
from docker_delivery.errors import SidecarNotReady as SidecarNotReady
from docker_delivery.errors import TestsFailed as TestsFailed
from docker_delivery.errors import TestTimeout as TestTimeout
from docker_delivery.images.ref import ImageRef
from docker_delivery.targets.engine_errors import docker_errors, request_errors
from docker_delivery.targets.labels import LABEL_MANAGED, LABEL_ROLE, LABEL_SIDECAR, LABEL_TEST_RUN
from docker_delivery.targets.oneoff import ensure_image, run_to_end

if TYPE_CHECKING:
    import docker
    import docker.errors
    from docker.models.containers import Container


__all__ = [
    "LABEL_MANAGED",
    "LABEL_ROLE",
    "LABEL_TEST_RUN",
    "ImageTest",
    "ImageTestRunner",
    "InvalidJUnitReport",
    "InvalidTestSpec",
    "JUnitCounts",
    "Sidecar",
    "SidecarNotReady",
    "TestSummary",
    "TestTimeout",
    "TestsFailed",
    "parse_junit",
    "safe_run_id",
]


RUN_ID_LENGTH_MAX: Final = 63
"""Run ids longer than this (after sanitising) are shortened and suffixed with a hash."""

JUNIT_REPORT_SIZE_MAX: Final = 64 * 1024 * 1024
"""The largest JUnit archive read back from a container (bytes)."""

_NAME: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_NOT_NAME_CHARACTER: Final = re.compile(r"[^a-zA-Z0-9_.-]+")
_LOG_TAIL_LINES: Final = 20
_POLL_INTERVAL: Final = 0.2

ProbeFrom = Literal["auto", "host", "network"]


# -- errors --------------------------------------------------------------------------------------


# -- specifications ------------------------------------------------------------------------------


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


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JUnitCounts:
    """The outcome counts of a JUnit XML report. ``tests`` = passed + failed + errors + skipped."""

    tests: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0

    @property
    def passed(self) -> int:
        return self.tests - self.failed - self.errors - self.skipped

    def __add__(self, other: JUnitCounts) -> JUnitCounts:
        return JUnitCounts(
            self.tests + other.tests,
            self.failed + other.failed,
            self.errors + other.errors,
            self.skipped + other.skipped,
        )


@dataclass(frozen=True)
class TestSummary:
    """The outcome of one test run, as pushed to XCom (:meth:`as_dict`)."""

    __test__: ClassVar[bool] = False

    passed: int
    failed: int
    errors: int
    skipped: int
    exit_code: int
    duration_s: float
    report_found: bool

    @property
    def ok(self) -> bool:
        """True when the command exited 0 and no test failed or errored."""
        return self.exit_code == 0 and self.failed == 0 and self.errors == 0

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-compatible dict (``TestSummary(**d)`` rebuilds the summary)."""
        return asdict(self)

    def describe(self) -> str:
        """``N passed, F failed, E errors, S skipped (exit code X)``."""
        return (
            f"{self.passed} passed, {self.failed} failed, {self.errors} errors, "
            f"{self.skipped} skipped (exit code {self.exit_code})"
        )


# -- JUnit XML -----------------------------------------------------------------------------------


def parse_junit(data: bytes | str) -> JUnitCounts:
    """Count the outcomes in a JUnit XML report with a ``testsuite`` or ``testsuites`` root.

    Each ``testcase`` counts once: failed when it has a ``failure``, else errored when it has an
    ``error``, else skipped when it has a ``skipped``, else passed. A report without ``testcase``
    elements is counted from the ``tests``/``failures``/``errors``/``skipped`` attributes of its
    root (or, for a ``testsuites`` root without them, of its suites). Raises
    :class:`InvalidJUnitReport` for anything else.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        raise InvalidJUnitReport(f"the JUnit report is not well-formed XML: {error}") from None
    kind = _local(root.tag)
    if kind not in ("testsuite", "testsuites"):
        raise InvalidJUnitReport(
            f"the JUnit report's root element is <{kind}>; expected <testsuite> or <testsuites>"
        )
    cases = [element for element in root.iter() if _local(element.tag) == "testcase"]
    if cases:
        counts = JUnitCounts()
        for case in cases:
            children = {_local(child.tag) for child in case}
            counts += JUnitCounts(
                tests=1,
                failed=int("failure" in children),
                errors=int("error" in children and "failure" not in children),
                skipped=int("skipped" in children and not children & {"failure", "error"}),
            )
        return counts
    if kind == "testsuites" and root.get("tests") is None:
        suites = [child for child in root if _local(child.tag) == "testsuite"]
        return sum((_attribute_counts(suite) for suite in suites), JUnitCounts())
    return _attribute_counts(root)


def _attribute_counts(element: ET.Element) -> JUnitCounts:
    def number(name: str) -> int:
        text = element.get(name) or "0"
        try:
            value = int(text)
        except ValueError:
            raise InvalidJUnitReport(
                f"<{_local(element.tag)}> attribute {name}={text!r} is not a whole number"
            ) from None
        if value < 0:
            raise InvalidJUnitReport(f"<{_local(element.tag)}> attribute {name}={text!r} < 0")
        return value

    skipped = number("skipped") if element.get("skipped") is not None else number("disabled")
    counts = JUnitCounts(number("tests"), number("failures"), number("errors"), skipped)
    if counts.passed < 0:
        raise InvalidJUnitReport(
            f"<{_local(element.tag)}> counts more failures, errors and skips than tests"
        )
    return counts


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _reports_in_tar(archive: bytes) -> list[tuple[str, bytes]]:
    """The regular files of a tar archive: all of them when one, else the ``*.xml`` ones."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = [member for member in tar.getmembers() if member.isfile()]
        if len(members) > 1:
            members = [member for member in members if member.name.endswith(".xml")]
        reports = []
        for member in sorted(members, key=lambda m: m.name):
            extracted = tar.extractfile(member)
            if extracted is not None:
                reports.append((member.name, extracted.read()))
        return reports


# -- the runner ----------------------------------------------------------------------------------


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


class ImageTestRunner:
    """Runs :class:`ImageTest` s on a Docker Engine; ``log`` receives one line at a time.

    ``probe_from`` says where a sidecar's ``wait_for_port`` is checked from: ``host`` connects to
    the sidecar's address on the test network from this process (works when this process runs
    on the Docker host); ``network`` runs a short-lived probe container from the test image on the
    test network (works wherever the engine is, but needs ``python3``, ``nc`` or ``bash`` in the
    image); ``auto`` tries ``host`` and falls back to ``network`` when the address is unreachable.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        log: Callable[[str], None],
        *,
        probe_from: ProbeFrom = "auto",
    ) -> None:
        if probe_from not in ("auto", "host", "network"):
            raise InvalidTestSpec(f"probe_from must be auto, host or network, not {probe_from!r}")
        self.client = client
        self.log = log
        self.probe_from: ProbeFrom = probe_from

    # -- public ----------------------------------------------------------------------------------

    def run(self, test: ImageTest, run_id: str) -> TestSummary:
        """Run ``test`` under ``run_id``; return its summary, or raise :class:`TestsFailed`.

        Also raises :class:`TestTimeout`, :class:`SidecarNotReady`, :class:`InvalidJUnitReport`,
        or :class:`DeliveryError` when the image cannot be pulled or the container not started.
        Whatever happens, everything the run created is removed before it returns or raises.
        """
        rid = safe_run_id(run_id)
        removed = self.cleanup(rid)
        if removed:
            self.log(f"removed {removed} leftover object(s) of an earlier attempt of run {rid}")
        image = test.pinned_image
        succeeded = False
        try:
            ensure_image(self.client, image, self.log)
            network = self._create_network(rid)
            for sidecar in test.sidecars:
                self._start_sidecar(sidecar, rid, network, probe_image=image)
            summary = self._run_tests(test, rid, network, image)
            succeeded = True
        except docker_errors().NotFound as error:
            raise DeliveryError(
                f"a container or network of test run {rid} was removed while the run was going "
                f"(by cleanup, on_kill, or by hand): {error.explanation or error}"
            ) from error
        finally:
            try:
                self.cleanup(rid)
            except Exception as error:
                if succeeded:
                    raise
                # Do not hide why the run failed; the next run under this id cleans up anyway.
                self.log(f"could not clean up after test run {rid}: {error}")
        self.log(
            f"tests: {summary.passed} passed, {summary.failed} failed, {summary.errors} errors, "
            f"{summary.skipped} skipped (exit code {summary.exit_code}) in "
            f"{summary.duration_s:.1f}s"
        )
        if not summary.ok:
            raise TestsFailed(summary, image=image)
        return summary

    def cleanup(self, run_id: str) -> int:
        """Remove every container and network labelled with ``run_id``; return how many."""
        label = f"{LABEL_TEST_RUN}={safe_run_id(run_id)}"
        removed = 0
        for container in self.client.containers.list(
            all=True, filters={"label": label}, ignore_removed=True
        ):
            with contextlib.suppress(docker_errors().NotFound):
                try:
                    container.remove(force=True, v=True)
                    removed += 1
                except docker_errors().APIError as error:
                    if error.status_code != 409:  # 409: removal already in progress
                        raise
        for network in self.client.networks.list(filters={"label": label}):
            deadline = time.monotonic() + 10
            while True:
                try:
                    network.remove()
                    removed += 1
                    break
                except docker_errors().NotFound:
                    break
                except docker_errors().APIError as error:
                    # Endpoints of containers being removed can linger for a moment.
                    if "active endpoints" not in str(error) or time.monotonic() > deadline:
                        raise
                    time.sleep(_POLL_INTERVAL)
        return removed

    # -- steps -----------------------------------------------------------------------------------

    def _labels(self, rid: str, role: str) -> dict[str, str]:
        return {LABEL_MANAGED: "true", LABEL_TEST_RUN: rid, LABEL_ROLE: role}

    def _create_network(self, rid: str) -> str:
        name = f"dd-test-{rid}"
        self.client.networks.create(name, driver="bridge", labels=self._labels(rid, "network"))
        return name

    def _start_sidecar(self, sidecar: Sidecar, rid: str, network: str, probe_image: str) -> None:
        ensure_image(self.client, sidecar.image, self.log)
        endpoint = self.client.api.create_endpoint_config(aliases=[sidecar.name])
        container = self.client.containers.run(
            sidecar.image,
            sidecar.command,
            name=f"dd-test-{rid}-{sidecar.name}",
            detach=True,
            environment=dict(sidecar.env),
            labels={**self._labels(rid, "sidecar"), LABEL_SIDECAR: sidecar.name},
            network=network,
            networking_config={network: endpoint},
        )
        self.log(f"sidecar {sidecar.name} started from {sidecar.image}")
        if sidecar.wait_for_port is not None:
            self._wait_for_port(sidecar, container, rid, network, probe_image)

    def _run_tests(self, test: ImageTest, rid: str, network: str, image: str) -> TestSummary:
        container = self.client.containers.create(
            image,
            test.argv,
            name=f"dd-test-{rid}",
            environment=dict(test.env),
            labels=self._labels(rid, "test"),
            network=network,
            working_dir=test.workdir,
            user=test.user,
        )
        self.log(f"running tests in {image}: {test.argv}")
        try:
            run = run_to_end(container, timeout=test.timeout, on_line=self.log, log=self.log)
        except docker_errors().APIError as error:
            raise DeliveryError(
                f"could not start the test container from {image}: {error.explanation or error}"
            ) from error
        if run.exit_code is None:
            self.log(
                f"tests did not finish within {test.timeout:g}s: the test container was killed"
            )
            raise TestTimeout(test.timeout, image=image)
        exit_code, duration = run.exit_code, run.duration_s
        counts, found = self._collect_report(container, test.junit_path)
        return TestSummary(
            passed=counts.passed,
            failed=counts.failed,
            errors=counts.errors,
            skipped=counts.skipped,
            exit_code=exit_code,
            duration_s=duration,
            report_found=found,
        )

    def _collect_report(self, container: Container, path: str | None) -> tuple[JUnitCounts, bool]:
        if path is None:
            return JUnitCounts(), False
        try:
            chunks, _ = container.get_archive(path)
            archive = _read_limited(chunks, JUNIT_REPORT_SIZE_MAX, path)
        except docker_errors().NotFound:
            self.log(f"no JUnit report at {path} in the test container; counting the exit code")
            return JUnitCounts(), False
        reports = _reports_in_tar(archive)
        if not reports:
            self.log(f"no JUnit report under {path} in the test container (no *.xml file)")
            return JUnitCounts(), False
        counts = JUnitCounts()
        for name, data in reports:
            try:
                counts += parse_junit(data)
            except InvalidJUnitReport as error:
                raise InvalidJUnitReport(f"{path} ({name}): {error}") from None
        return counts, True

    # -- waiting for sidecars --------------------------------------------------------------------

    def _wait_for_port(
        self, sidecar: Sidecar, container: Container, rid: str, network: str, probe_image: str
    ) -> None:
        port = sidecar.wait_for_port
        assert port is not None
        deadline = time.monotonic() + sidecar.wait_timeout
        mode = self.probe_from
        if mode != "network":
            address = self._address(container, network, sidecar, deadline)
            reached = self._probe_from_host(sidecar, container, address, port, deadline)
            if reached:
                self.log(f"sidecar {sidecar.name} accepts connections on port {port}")
                return
            if mode == "host":
                raise SidecarNotReady(
                    f"sidecar {sidecar.name} at {address}:{port} cannot be reached from this "
                    "host; run the runner with probe_from='network' or 'auto'"
                )
            self.log(f"{address} is not reachable from here; probing from the test network")
        self._probe_from_network(sidecar, container, rid, network, probe_image, deadline)
        self.log(f"sidecar {sidecar.name} accepts connections on port {port}")

    def _address(
        self, container: Container, network: str, sidecar: Sidecar, deadline: float
    ) -> str:
        while True:
            container.reload()
            self._check_alive(sidecar, container)
            settings = container.attrs["NetworkSettings"]["Networks"].get(network) or {}
            address = settings.get("IPAddress")
            if address:
                return str(address)
            if time.monotonic() > deadline:
                self._not_ready(sidecar, container)
            time.sleep(_POLL_INTERVAL)

    def _probe_from_host(
        self, sidecar: Sidecar, container: Container, address: str, port: int, deadline: float
    ) -> bool:
        """True once ``address:port`` accepts; False when it is unreachable from this process."""
        while True:
            try:
                with socket.create_connection((address, port), timeout=2):
                    return True
            except ConnectionRefusedError:
                pass  # the sidecar is up on the network but not listening yet
            except OSError:
                return False
            container.reload()
            self._check_alive(sidecar, container)
            if time.monotonic() > deadline:
                self._not_ready(sidecar, container)
            time.sleep(_POLL_INTERVAL)

    def _probe_from_network(
        self,
        sidecar: Sidecar,
        container: Container,
        rid: str,
        network: str,
        probe_image: str,
        deadline: float,
    ) -> None:
        probe = self.client.containers.run(
            probe_image,
            [sidecar.name, str(sidecar.wait_for_port)],
            entrypoint=["/bin/sh", "-c", _PROBE_SCRIPT, "probe"],
            detach=True,  # unnamed, so it cannot clash with a sidecar; found by its labels
            labels=self._labels(rid, "probe"),
            network=network,
        )
        try:
            while True:
                try:
                    code = int(probe.wait(timeout=1)["StatusCode"])
                except request_errors():
                    code = None
                if code == 0:
                    return
                if code is not None:
                    output = probe.logs().decode("utf-8", "replace").strip()
                    raise SidecarNotReady(
                        f"cannot probe sidecar {sidecar.name} from the test network with "
                        f"{probe_image} (exit code {code}): {output or 'no output'}"
                    )
                container.reload()
                self._check_alive(sidecar, container)
                if time.monotonic() > deadline:
                    self._not_ready(sidecar, container)
        finally:
            with contextlib.suppress(docker_errors().APIError):
                probe.remove(force=True)

    def _check_alive(self, sidecar: Sidecar, container: Container) -> None:
        if container.status in ("exited", "dead"):
            code = container.attrs["State"]["ExitCode"]
            raise SidecarNotReady(
                f"sidecar {sidecar.name} ({sidecar.image}) exited with code {code} before "
                f"accepting connections on port {sidecar.wait_for_port}; its last output:\n"
                f"{_tail(container)}"
            )

    def _not_ready(self, sidecar: Sidecar, container: Container) -> None:
        raise SidecarNotReady(
            f"sidecar {sidecar.name} ({sidecar.image}) did not accept connections on port "
            f"{sidecar.wait_for_port} within {sidecar.wait_timeout:g}s; check that it listens "
            f"on that port on all interfaces (0.0.0.0), or raise wait_timeout; its last "
            f"output:\n{_tail(container)}"
        )


_PROBE_SCRIPT: Final = """
host=$1 port=$2
while :; do
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)' \
      "$host" "$port" 2>/dev/null && exit 0
  elif command -v nc >/dev/null 2>&1; then
    nc -z -w 2 "$host" "$port" 2>/dev/null && exit 0
  elif command -v bash >/dev/null 2>&1; then
    bash -c ': > "/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null && exit 0
  else
    echo "the image has none of python3, nc or bash to probe a port with" >&2
    exit 3
  fi
  sleep 0.2
done
"""


def _tail(container: Container) -> str:
    try:
        output = container.logs(tail=_LOG_TAIL_LINES)
    except Exception as error:
        return f"(could not read its output: {error})"
    return bytes(output).decode("utf-8", "replace").rstrip() or "(no output)"


def _read_limited(chunks: Iterable[bytes], limit: int, path: str) -> bytes:
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) > limit:
            raise InvalidJUnitReport(f"{path} is larger than {limit} bytes; not a JUnit report?")
    return bytes(buffer)
