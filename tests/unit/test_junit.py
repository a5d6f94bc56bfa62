"""JUnit XML reports as test runners write them, counted by parse_junit (no Docker)."""

from __future__ import annotations

import io
import tarfile

import pytest

from docker_delivery.errors import DeliveryError, InvalidReference
from docker_delivery.images.testing import (
    ImageTest,
    InvalidJUnitReport,
    InvalidTestSpec,
    JUnitCounts,
    Sidecar,
    TestsFailed,
    TestSummary,
    parse_junit,
    safe_run_id,
)
from docker_delivery.images.testing.junit import reports_in_tar

DIGEST = "sha256:" + "a" * 64
PINNED = f"127.0.0.1:5000/app@{DIGEST}"


def test_testsuite_root_counts_each_outcome() -> None:
    report = b"""<?xml version="1.0" encoding="utf-8"?>
    <testsuite name="app" tests="5" failures="1" errors="1" skipped="1" time="0.1">
      <testcase classname="t.A" name="test_ok" time="0.01"/>
      <testcase classname="t.A" name="test_ok_too"><system-out>hi</system-out></testcase>
      <testcase classname="t.A" name="test_bad"><failure message="1 != 2">trace</failure></testcase>
      <testcase classname="t.A" name="test_boom"><error message="KeyError">trace</error></testcase>
      <testcase classname="t.A" name="test_later"><skipped message="not today"/></testcase>
    </testsuite>"""
    counts = parse_junit(report)
    assert counts == JUnitCounts(tests=5, failed=1, errors=1, skipped=1)
    assert counts.passed == 2


def test_testsuites_root_sums_its_suites() -> None:
    report = """<testsuites>
      <testsuite name="a"><testcase name="x"/><testcase name="y"><failure/></testcase></testsuite>
      <testsuite name="b"><testcase name="z"><skipped/></testcase><testcase name="w"/></testsuite>
    </testsuites>"""
    assert parse_junit(report) == JUnitCounts(tests=4, failed=1, errors=0, skipped=1)


def test_nested_suites_count_each_case_once() -> None:
    report = """<testsuites tests="3"><testsuite name="outer">
      <testcase name="a"/>
      <testsuite name="inner"><testcase name="b"/><testcase name="c"><error/></testcase></testsuite>
    </testsuite></testsuites>"""
    assert parse_junit(report) == JUnitCounts(tests=3, errors=1)


def test_pytest_style_report_with_skips_and_errors() -> None:
    # pytest: a <testsuites> root, xfail as <skipped>, a teardown error next to a failure.
    report = b"""<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">
    <testsuite name="pytest" errors="1" failures="1" skipped="2" tests="6" time="0.05">
      <testcase classname="tests.test_x" name="test_a" time="0.001" />
      <testcase classname="tests.test_x" name="test_b" time="0.001" />
      <testcase classname="tests.test_x" name="test_skip"><skipped type="pytest.skip"
        message="no db">/x.py:3: no db</skipped></testcase>
      <testcase classname="tests.test_x" name="test_xfail"><skipped type="pytest.xfail"
        message="known" /></testcase>
      <testcase classname="tests.test_x" name="test_fail"><failure message="assert 0">x</failure>
        <error message="failed on teardown">y</error></testcase>
      <testcase classname="tests.test_x" name="test_setup"><error message="fixture">z</error>
      </testcase>
    </testsuite></testsuites>"""
    counts = parse_junit(report)
    assert (counts.passed, counts.failed, counts.errors, counts.skipped) == (2, 1, 1, 2)


def test_empty_suite_counts_nothing() -> None:
    assert parse_junit('<testsuite name="empty" tests="0"/>') == JUnitCounts()
    assert parse_junit("<testsuites/>") == JUnitCounts()


def test_report_without_testcases_is_counted_from_attributes() -> None:
    assert parse_junit(
        '<testsuite tests="10" failures="2" errors="1" skipped="3"/>'
    ) == JUnitCounts(10, 2, 1, 3)
    assert parse_junit(
        '<testsuites><testsuite tests="4" failures="1"/><testsuite tests="2" disabled="2"/>'
        "</testsuites>"
    ) == JUnitCounts(6, 1, 0, 2)
    assert parse_junit('<testsuites tests="7" failures="1"><testsuite/></testsuites>') == (
        JUnitCounts(7, 1)
    )


def test_namespaced_elements_are_recognised() -> None:
    report = '<j:testsuite xmlns:j="urn:x"><j:testcase name="a"><j:failure/></j:testcase>'
    assert parse_junit(report + "</j:testsuite>") == JUnitCounts(tests=1, failed=1)


@pytest.mark.parametrize(
    ("report", "problem"),
    [
        ("", "not well-formed"),
        ("<testsuite><testcase></testsuite>", "not well-formed"),
        ("<html><body/></html>", "root element is <html>"),
        ('<testsuite tests="many"/>', "not a whole number"),
        ('<testsuite tests="1" failures="2"/>', "more failures"),
    ],
)
def test_invalid_reports_are_refused(report: str, problem: str) -> None:
    with pytest.raises(InvalidJUnitReport, match=problem) as caught:
        parse_junit(report)
    assert isinstance(caught.value, DeliveryError)


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_archive_of_one_file_or_of_a_report_directory() -> None:
    assert reports_in_tar(_tar({"report.junit": b"<testsuite/>"})) == [
        ("report.junit", b"<testsuite/>")
    ]
    reports = reports_in_tar(_tar({"r/b.xml": b"<b/>", "r/a.xml": b"<a/>", "r/notes.txt": b"no"}))
    assert reports == [("r/a.xml", b"<a/>"), ("r/b.xml", b"<b/>")]


def test_summary_dict_round_trips_and_failure_message_names_counts() -> None:
    summary = TestSummary(3, 1, 0, 2, exit_code=1, duration_s=1.5, report_found=True)
    assert TestSummary(**summary.as_dict()) == summary
    assert not summary.ok
    assert TestSummary(3, 0, 0, 0, 0, 0.1, True).ok
    assert not TestSummary(3, 0, 0, 0, 2, 0.1, True).ok
    message = str(TestsFailed(summary, image=PINNED))
    assert "3 passed, 1 failed, 0 errors, 2 skipped (exit code 1)" in message
    assert PINNED in message


def test_test_spec_validation() -> None:
    with pytest.raises(InvalidReference, match="not pinned by digest"):
        ImageTest(image="127.0.0.1:5000/app:1.0", command=["true"])
    with pytest.raises(InvalidTestSpec, match=r"pass an argv list .* or set shell=True"):
        ImageTest(image=PINNED, command="python3 -m unittest")
    assert ImageTest(image=PINNED, command="echo hi", shell=True).argv == [
        "/bin/sh",
        "-c",
        "echo hi",
    ]
    with pytest.raises(InvalidTestSpec, match="unique"):
        ImageTest(
            image=PINNED,
            command=["true"],
            sidecars=(Sidecar("db", PINNED), Sidecar("db", PINNED)),
        )
    test = ImageTest(image=PINNED, command=["true"], sidecars=({"name": "web", "image": PINNED},))  # type: ignore[arg-type]
    assert test.sidecars == (Sidecar("web", PINNED),)
    with pytest.raises(InvalidTestSpec, match="host name"):
        Sidecar("no spaces", PINNED)


def test_run_ids_are_docker_names_and_stay_distinct() -> None:
    assert safe_run_id("build-1.t1") == "build-1.t1"
    assert safe_run_id("a/b") != safe_run_id("a_b")
    long = safe_run_id("x" * 200)
    assert len(long) <= 63
    assert safe_run_id("manual__2024-01-01T00:00:00+00:00").startswith("manual__2024-01-01T00-00")
