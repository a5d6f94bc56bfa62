"""Run the demo app's unittest suite; optionally write a JUnit XML report.

Usage: python3 run_tests.py [--junit-xml PATH] [-q]
Exit code 0 when every test passed, 1 otherwise. Standard library only.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
import traceback
import unittest
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


class RecordingResult(unittest.TextTestResult):
    """A TextTestResult that also records each test's outcome and duration."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.records: list[dict] = []
        self._started: dict[str, float] = {}

    def startTest(self, test: unittest.TestCase) -> None:
        self._started[test.id()] = time.monotonic()
        super().startTest(test)

    def _record(
        self, test, outcome: str, detail: str = "", message: str = "", kind: str = ""
    ) -> None:
        started = self._started.pop(test.id(), time.monotonic())
        self.records.append(
            {
                "test": test,
                "outcome": outcome,
                "detail": detail,
                "message": message,
                "type": kind,
                "time": time.monotonic() - started,
            }
        )

    def _failure(self, test, err, outcome: str) -> None:
        kind, value, _ = err
        detail = "".join(traceback.format_exception(*err))
        self._record(
            test, outcome, detail, str(value).splitlines()[0] if str(value) else "", kind.__name__
        )

    def addSuccess(self, test) -> None:
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test, err) -> None:
        super().addFailure(test, err)
        self._failure(test, err, "failure")

    def addError(self, test, err) -> None:
        super().addError(test, err)
        self._failure(test, err, "error")

    def addSubTest(self, test, subtest, err) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:  # failing subtests become their own testcase
            failed = issubclass(err[0], test.failureException)
            self._failure(subtest, err, "failure" if failed else "error")

    def addSkip(self, test, reason: str) -> None:
        super().addSkip(test, reason)
        self._record(test, "skipped", message=reason)

    def addExpectedFailure(self, test, err) -> None:
        super().addExpectedFailure(test, err)
        self._record(test, "passed")

    def addUnexpectedSuccess(self, test) -> None:
        super().addUnexpectedSuccess(test)
        self._record(test, "failure", message="unexpected success", kind="UnexpectedSuccess")


def junit_xml(records: list[dict], name: str, elapsed: float) -> ET.ElementTree:
    count = {k: sum(r["outcome"] == k for r in records) for k in ("failure", "error", "skipped")}
    suite = ET.Element(
        "testsuite",
        {
            "name": name,
            "tests": str(len(records)),
            "failures": str(count["failure"]),
            "errors": str(count["error"]),
            "skipped": str(count["skipped"]),
            "time": f"{elapsed:.3f}",
            "hostname": socket.gethostname(),
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    for record in records:
        test = record["test"]
        base = getattr(test, "test_case", test)  # a subtest's parent test
        classname = f"{type(base).__module__}.{type(base).__qualname__}"
        method = test.id().removeprefix(classname + ".")
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": classname, "name": method, "time": f"{record['time']:.3f}"},
        )
        if record["outcome"] in ("failure", "error"):
            child = ET.SubElement(
                case, record["outcome"], {"message": record["message"], "type": record["type"]}
            )
            child.text = record["detail"]
        elif record["outcome"] == "skipped":
            ET.SubElement(case, "skipped", {"message": record["message"]})
    ET.indent(suite)
    return ET.ElementTree(suite)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junit-xml", metavar="PATH", help="write a JUnit XML report here")
    parser.add_argument("-q", "--quiet", action="store_true", help="less output")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    suite = unittest.defaultTestLoader.discover(
        str(HERE), pattern="test*.py", top_level_dir=str(HERE)
    )
    runner = unittest.TextTestRunner(verbosity=1 if args.quiet else 2, resultclass=RecordingResult)
    start = time.monotonic()
    result = runner.run(suite)
    if args.junit_xml:
        path = Path(args.junit_xml)
        path.parent.mkdir(parents=True, exist_ok=True)
        junit_xml(result.records, "demo_app", time.monotonic() - start).write(
            path, encoding="utf-8", xml_declaration=True
        )
        with path.open("a", encoding="utf-8") as report:
            report.write("\n")
        print(f"JUnit XML report: {path}", file=sys.stderr)
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
