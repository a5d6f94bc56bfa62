"""Runs an image test: a private network, its sidecars (started, probed), the test, its report."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from docker_delivery.errors import (
    DeliveryError,
    InvalidJUnitReport,
    InvalidTestSpec,
    SidecarNotReady,
    TestsFailed,
    TestTimeout,
)
from docker_delivery.images.testing.junit import (
    JUNIT_REPORT_SIZE_MAX,
    JUnitCounts,
    parse_junit,
    read_limited,
    reports_in_tar,
)
from docker_delivery.images.testing.spec import ImageTest, ProbeFrom, Sidecar, safe_run_id
from docker_delivery.images.testing.summary import TestSummary
from docker_delivery.targets.engine_errors import docker_errors, request_errors
from docker_delivery.targets.labels import LABEL_MANAGED, LABEL_ROLE, LABEL_SIDECAR, LABEL_TEST_RUN
from docker_delivery.targets.oneoff import ensure_image, run_to_end

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

_LOG_TAIL_LINES: Final = 20
_POLL_INTERVAL: Final = 0.2


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
            archive = read_limited(chunks, JUNIT_REPORT_SIZE_MAX, path)
        except docker_errors().NotFound:
            self.log(f"no JUnit report at {path} in the test container; counting the exit code")
            return JUnitCounts(), False
        reports = reports_in_tar(archive)
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
