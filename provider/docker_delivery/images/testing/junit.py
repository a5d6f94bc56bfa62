"""JUnit XML reports: counting their outcomes, and reading them back from a container's archive."""

from __future__ import annotations

import io
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from docker_delivery.errors import InvalidJUnitReport

JUNIT_REPORT_SIZE_MAX: Final = 64 * 1024 * 1024
"""The largest JUnit archive read back from a container (bytes)."""


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


def reports_in_tar(archive: bytes) -> list[tuple[str, bytes]]:
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


def read_limited(chunks: Iterable[bytes], limit: int, path: str) -> bytes:
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) > limit:
            raise InvalidJUnitReport(f"{path} is larger than {limit} bytes; not a JUnit report?")
    return bytes(buffer)
