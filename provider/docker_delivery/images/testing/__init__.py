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

This is pure domain code: it must never import airflow."""

from __future__ import annotations

from docker_delivery.errors import InvalidJUnitReport as InvalidJUnitReport
from docker_delivery.errors import InvalidTestSpec as InvalidTestSpec
from docker_delivery.errors import SidecarNotReady as SidecarNotReady
from docker_delivery.errors import TestsFailed as TestsFailed
from docker_delivery.errors import TestTimeout as TestTimeout
from docker_delivery.images.testing.junit import JUNIT_REPORT_SIZE_MAX as JUNIT_REPORT_SIZE_MAX
from docker_delivery.images.testing.junit import JUnitCounts as JUnitCounts
from docker_delivery.images.testing.junit import parse_junit as parse_junit
from docker_delivery.images.testing.junit import read_limited as read_limited
from docker_delivery.images.testing.junit import reports_in_tar as reports_in_tar
from docker_delivery.images.testing.runner import ImageTestRunner as ImageTestRunner
from docker_delivery.images.testing.spec import RUN_ID_LENGTH_MAX as RUN_ID_LENGTH_MAX
from docker_delivery.images.testing.spec import ImageTest as ImageTest
from docker_delivery.images.testing.spec import ProbeFrom as ProbeFrom
from docker_delivery.images.testing.spec import Sidecar as Sidecar
from docker_delivery.images.testing.spec import safe_run_id as safe_run_id
from docker_delivery.images.testing.summary import TestSummary as TestSummary
from docker_delivery.targets.labels import LABEL_MANAGED as LABEL_MANAGED
from docker_delivery.targets.labels import LABEL_ROLE as LABEL_ROLE
from docker_delivery.targets.labels import LABEL_TEST_RUN as LABEL_TEST_RUN

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
