"""Test an image inside the image, by digest, on the real test bed (Docker Engine + registry).

A tiny test image (FROM the bed's python image, with a unittest suite and a JUnit writer) is
built and pushed to the bed registry once per module, so every test runs it by digest.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import pytest
from kit.logs import Lines

from docker_delivery.errors import InvalidReference
from docker_delivery.images.ref import ImageRef
from docker_delivery.images.testing import (
    ImageTest,
    ImageTestRunner,
    Sidecar,
    SidecarNotReady,
    TestsFailed,
    TestSummary,
    TestTimeout,
    safe_run_id,
)
from docker_delivery.targets.labels import LABEL_MANAGED, LABEL_TEST_RUN

pytestmark = pytest.mark.integration

PREFIX = f"it-{uuid.uuid4().hex[:8]}"
"""Every run id of this module starts with this, so leftovers can be told from others' objects."""

RUN_PY = '''
"""Run the unittest files matching PATTERN; write a JUnit XML report to JUNIT_PATH."""
import sys
import unittest
import xml.etree.ElementTree as ET


class Result(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cases = []

    def addSuccess(self, test):
        super().addSuccess(test)
        self.cases.append((test, None, ""))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.cases.append((test, "failure", self._exc_info_to_string(err, test)))

    def addError(self, test, err):
        super().addError(test, err)
        self.cases.append((test, "error", self._exc_info_to_string(err, test)))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.cases.append((test, "skipped", reason))


junit_path, pattern = sys.argv[1], sys.argv[2]
suite = unittest.defaultTestLoader.discover("/app/tests", pattern=pattern)
result = unittest.TextTestRunner(resultclass=Result, verbosity=2, stream=sys.stdout).run(suite)
root = ET.Element("testsuite", name=pattern, tests=str(len(result.cases)))
for test, kind, text in result.cases:
    case = ET.SubElement(root, "testcase", classname=type(test).__name__, name=test.id())
    if kind:
        ET.SubElement(case, kind, message=text.strip().splitlines()[-1]).text = text
ET.ElementTree(root).write(junit_path, encoding="utf-8", xml_declaration=True)
sys.exit(0 if result.wasSuccessful() else 1)
'''

TEST_PASS_PY = """
import os
import unittest


class Passing(unittest.TestCase):
    def test_arithmetic(self):
        self.assertEqual(2 + 2, 4)

    def test_environment_is_passed(self):
        self.assertEqual(os.environ.get("GREETING"), "hello")

    def test_runs_as_the_requested_user(self):
        self.assertEqual(os.getuid(), int(os.environ.get("EXPECTED_UID", os.getuid())))

    @unittest.skip("not on this platform")
    def test_skipped(self):
        pass
"""

TEST_FAIL_PY = """
import unittest


class Failing(unittest.TestCase):
    def test_good(self):
        pass

    def test_bad(self):
        self.assertEqual(1, 2)

    def test_worse(self):
        self.assertTrue(False, "still false")

    def test_broken(self):
        raise KeyError("missing")
"""

TEST_SIDECAR_PY = """
import os
import unittest
import urllib.request


class Sidecar(unittest.TestCase):
    def test_sidecar_answers_by_its_alias(self):
        with urllib.request.urlopen(os.environ["SIDECAR_URL"], timeout=5) as response:
            self.assertEqual(response.status, 200)
"""

DAG_PY = """
import pendulum
from airflow.sdk import DAG, task

from docker_delivery.operators.test import TestImageOperator

with DAG(
    "{dag_id}", schedule=None, start_date=pendulum.datetime(2024, 1, 1), catchup=False
) as dag:

    @task
    def build(**context):
        return context["dag_run"].conf["image"]

    common = dict(
        image="{{{{ ti.xcom_pull(task_ids='build') }}}}",
        environment={{"GREETING": "{{{{ dag_run.conf['greeting'] }}}}"}},
        workdir="/app",
        junit_path="/tmp/junit.xml",
        test_timeout=120,
    )
    unit = TestImageOperator(
        task_id="unit", command=["python3", "run.py", "/tmp/junit.xml", "test_pass*.py"], **common
    )
    failing = TestImageOperator(
        task_id="failing",
        command=["python3", "run.py", "/tmp/junit.xml", "test_fail*.py"],
        **common,
    )
    build() >> [unit, failing]
"""


def leftovers(client: docker.DockerClient, run_id: str) -> list[str]:
    """Names of containers and networks still labelled with ``run_id``."""
    label = f"{LABEL_TEST_RUN}={safe_run_id(run_id)}"
    return [
        c.name
        for c in client.containers.list(ignore_removed=True, all=True, filters={"label": label})
    ] + [n.name for n in client.networks.list(filters={"label": label})]


def module_leftovers(client: docker.DockerClient, run_ids: list[str]) -> list[str]:
    """Every object of this module still there: by our run-id prefix and the run ids given."""
    found = [
        c.name
        for c in client.containers.list(
            ignore_removed=True, all=True, filters={"label": LABEL_MANAGED}
        )
        if c.labels.get(LABEL_TEST_RUN, "").startswith(PREFIX)
    ]
    found += [
        n.name
        for n in client.networks.list(filters={"label": LABEL_MANAGED})
        if (n.attrs.get("Labels") or {}).get(LABEL_TEST_RUN, "").startswith(PREFIX)
    ]
    for run_id in run_ids:
        found += leftovers(client, run_id)
    return found


@pytest.fixture(scope="module")
def created_run_ids() -> list[str]:
    """Run ids not under PREFIX (the operator's) to check for leftovers at the end."""
    return []


@pytest.fixture(scope="module")
def test_image(
    bed: Any,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
    created_run_ids: list[str],
) -> Iterator[str]:
    """The digest-pinned reference of the module's test image, pushed to the bed registry."""
    context = tmp_path_factory.mktemp("test-image")
    (context / "app" / "tests").mkdir(parents=True)
    (context / "app" / "run.py").write_text(RUN_PY)
    (context / "app" / "tests" / "test_pass.py").write_text(TEST_PASS_PY)
    (context / "app" / "tests" / "test_fail.py").write_text(TEST_FAIL_PY)
    (context / "app" / "tests" / "test_sidecar.py").write_text(TEST_SIDECAR_PY)
    (context / "Dockerfile").write_text(f"FROM {bed.python_image}\nCOPY app /app\n")
    repository = f"{bed.registry}/dd-test/{uuid.uuid4().hex[:8]}"
    image, _ = docker_client.images.build(path=str(context), tag=f"{repository}:v1", rm=True)
    for event in docker_client.images.push(repository, tag="v1", stream=True, decode=True):
        assert "error" not in event, event
    image.reload()
    digests = [d for d in image.attrs["RepoDigests"] if d.startswith(repository + "@")]
    assert digests, image.attrs["RepoDigests"]
    pinned = ImageRef.parse(digests[0]).require_pinned()
    yield str(pinned)
    left = module_leftovers(docker_client, created_run_ids)
    with_digest = docker_client.images.list(filters={"reference": repository})
    for local in with_digest or [image]:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.images.remove(local.id, force=True)
    assert not left, f"test objects left behind: {left}"


@pytest.fixture
def runner(docker_client: docker.DockerClient) -> ImageTestRunner:
    return ImageTestRunner(docker_client, Lines())


def run_id(name: str) -> str:
    return f"{PREFIX}-{name}"


def passing_test(image: str, **overrides: Any) -> ImageTest:
    fields: dict[str, Any] = {
        "image": image,
        "command": ["python3", "run.py", "/tmp/junit.xml", "test_pass*.py"],
        "env": {"GREETING": "hello"},
        "workdir": "/app",
        "junit_path": "/tmp/junit.xml",
        "timeout": 120,
    }
    return ImageTest(**{**fields, **overrides})


# -- runs ----------------------------------------------------------------------------------------


def test_a_passing_run_counts_its_tests_and_leaves_nothing(
    test_image: str, docker_client: docker.DockerClient
) -> None:
    log = Lines()
    runner = ImageTestRunner(docker_client, log)
    test = passing_test(
        test_image, user="65534", env={"GREETING": "hello", "EXPECTED_UID": "65534"}
    )

    summary = runner.run(test, run_id("pass"))

    assert summary.ok
    assert (summary.passed, summary.failed, summary.errors, summary.skipped) == (3, 0, 0, 1)
    assert summary.exit_code == 0 and summary.report_found and summary.duration_s > 0
    assert "test_arithmetic" in log.text  # the container's output reached the log
    assert "tests: 3 passed, 0 failed, 0 errors, 1 skipped (exit code 0) in" in log.text
    assert leftovers(docker_client, run_id("pass")) == []


def test_a_failing_run_raises_with_the_counts(
    test_image: str, docker_client: docker.DockerClient, runner: ImageTestRunner
) -> None:
    test = passing_test(
        test_image, command=["python3", "run.py", "/tmp/junit.xml", "test_fail*.py"]
    )

    with pytest.raises(TestsFailed) as caught:
        runner.run(test, run_id("fail"))

    summary = caught.value.summary
    assert (summary.passed, summary.failed, summary.errors, summary.skipped) == (1, 2, 1, 0)
    assert summary.exit_code == 1 and summary.report_found
    assert "1 passed, 2 failed, 1 errors, 0 skipped (exit code 1)" in str(caught.value)
    assert test_image in str(caught.value)
    assert leftovers(docker_client, run_id("fail")) == []


def test_without_a_report_the_exit_code_decides(test_image: str, runner: ImageTestRunner) -> None:
    ok = runner.run(ImageTest(image=test_image, command="exit 0", shell=True), run_id("exit0"))
    assert ok == TestSummary(0, 0, 0, 0, 0, ok.duration_s, report_found=False)

    with pytest.raises(TestsFailed, match=r"exit code 3\) \(no JUnit report was found\)"):
        runner.run(
            ImageTest(image=test_image, command=["python3", "-c", "raise SystemExit(3)"]),
            run_id("exit3"),
        )

    missing = passing_test(test_image, junit_path="/tmp/nowhere.xml")
    summary = runner.run(missing, run_id("noreport"))
    assert summary.ok and not summary.report_found and summary.passed == 0


def test_a_tag_only_reference_is_refused_before_anything_starts(
    test_image: str, docker_client: docker.DockerClient
) -> None:
    tagged = str(ImageRef.parse(test_image).without_tag().with_tag("v1")).split("@")[0]

    def of_this_image() -> set[str]:  # other test files start containers meanwhile
        found = docker_client.containers.list(
            ignore_removed=True, all=True, filters={"ancestor": test_image}
        )
        return {c.id for c in found}

    before = of_this_image()
    with pytest.raises(InvalidReference, match="not pinned by digest"):
        ImageTest(image=tagged, command=["true"])

    assert of_this_image() <= before


def test_an_image_missing_locally_is_pulled_by_digest(
    test_image: str, docker_client: docker.DockerClient
) -> None:
    docker_client.images.remove(docker_client.images.get(test_image).id, force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(test_image)
    log = Lines()

    summary = ImageTestRunner(docker_client, log).run(passing_test(test_image), run_id("pull"))

    assert summary.ok and summary.passed == 3
    assert f"pulling {test_image}" in log.text
    docker_client.images.get(test_image)


# -- sidecars ------------------------------------------------------------------------------------


@pytest.mark.parametrize("probe_from", ["auto", "network"])
def test_a_sidecar_is_reachable_by_its_alias(
    test_image: str, bed: Any, docker_client: docker.DockerClient, probe_from: str
) -> None:
    # The server starts listening only after two seconds: the tests must wait for the port.
    web = Sidecar(
        name="web",
        image=bed.python_image,
        command=["sh", "-c", "sleep 2; exec python3 -m http.server 8000"],
        wait_for_port=8000,
        wait_timeout=30,
    )
    test = passing_test(
        test_image,
        command=["python3", "run.py", "/tmp/junit.xml", "test_sidecar*.py"],
        env={"SIDECAR_URL": "http://web:8000/"},
        sidecars=(web,),
    )
    log = Lines()

    summary = ImageTestRunner(docker_client, log, probe_from=probe_from).run(  # type: ignore[arg-type]
        test, run_id(f"sidecar-{probe_from}")
    )

    assert (summary.passed, summary.failed, summary.errors) == (1, 0, 0)
    assert "sidecar web accepts connections on port 8000" in log.text
    assert leftovers(docker_client, run_id(f"sidecar-{probe_from}")) == []


def test_a_sidecar_that_exits_or_never_listens_fails_clearly(
    test_image: str, bed: Any, docker_client: docker.DockerClient, runner: ImageTestRunner
) -> None:
    crashing = Sidecar("db", bed.python_image, ["sh", "-c", "echo no config >&2; exit 4"], {}, 5432)
    with pytest.raises(SidecarNotReady, match=r"(?s)exited with code 4 .*no config"):
        runner.run(passing_test(test_image, sidecars=(crashing,)), run_id("crash"))
    assert leftovers(docker_client, run_id("crash")) == []

    silent = Sidecar("db", bed.python_image, ["sleep", "60"], wait_for_port=5432, wait_timeout=2)
    started = time.monotonic()
    with pytest.raises(SidecarNotReady, match="did not accept connections on port 5432 within 2s"):
        runner.run(passing_test(test_image, sidecars=(silent,)), run_id("silent"))
    assert time.monotonic() - started < 30
    assert leftovers(docker_client, run_id("silent")) == []


# -- timeouts, parallel runs, leftovers ----------------------------------------------------------


def test_a_timeout_kills_the_tests_and_leaves_nothing(
    test_image: str, bed: Any, docker_client: docker.DockerClient
) -> None:
    log = Lines()
    runner = ImageTestRunner(docker_client, log)
    hanging = ImageTest(
        image=test_image,
        command=["python3", "-uc", "import time; print('waiting forever'); time.sleep(600)"],
        sidecars=(Sidecar("web", bed.python_image, ["python3", "-m", "http.server", "8000"]),),
        timeout=3,
    )
    started = time.monotonic()

    with pytest.raises(TestTimeout, match="within the timeout of 3s") as caught:
        runner.run(hanging, run_id("timeout"))

    assert caught.value.timeout == 3
    assert time.monotonic() - started < 30
    assert "waiting forever" in log.text
    assert leftovers(docker_client, run_id("timeout")) == []


def test_parallel_runs_of_the_same_digest_do_not_collide(
    test_image: str, docker_client: docker.DockerClient
) -> None:
    runner = ImageTestRunner(docker_client, Lines())
    ids = [run_id(f"parallel-{n}") for n in range(3)]

    with ThreadPoolExecutor(max_workers=len(ids)) as pool:
        summaries = list(pool.map(lambda rid: runner.run(passing_test(test_image), rid), ids))

    assert [(s.passed, s.skipped, s.exit_code) for s in summaries] == [(3, 1, 0)] * 3
    assert [name for rid in ids for name in leftovers(docker_client, rid)] == []


def test_a_retry_removes_the_leftovers_of_a_killed_attempt(
    test_image: str, docker_client: docker.DockerClient, runner: ImageTestRunner
) -> None:
    rid = run_id("retry")
    labels = {LABEL_MANAGED: "true", LABEL_TEST_RUN: rid, "io.docker-delivery.role": "test"}
    docker_client.networks.create(f"dd-test-{rid}", labels=labels)
    docker_client.containers.run(
        test_image, ["sleep", "600"], name=f"dd-test-{rid}", labels=labels, detach=True
    )

    summary = runner.run(passing_test(test_image), rid)

    assert summary.ok
    assert leftovers(docker_client, rid) == []


# -- the operator ---------------------------------------------------------------------------------


def test_the_operator_cleans_earlier_tries_and_on_kill_removes_what_it_started(
    test_image: str, docker_client: docker.DockerClient
) -> None:
    from docker_delivery.errors import DeliveryError
    from docker_delivery.operators.test import TestImageOperator, attempt_run_id

    ti = SimpleNamespace(
        dag_id="dd_kill", task_id=f"{PREFIX}-kill", run_id="manual__1", map_index=-1, try_number=2
    )
    stale, current = attempt_run_id(ti, 1), attempt_run_id(ti, 2)
    assert stale != current and current.startswith(PREFIX)
    labels = {LABEL_MANAGED: "true", LABEL_TEST_RUN: stale, "io.docker-delivery.role": "test"}
    docker_client.containers.run(
        test_image, ["sleep", "600"], name=f"dd-test-{stale}", labels=labels, detach=True
    )
    operator = TestImageOperator(
        task_id=ti.task_id, image=test_image, command=["sleep", "600"], test_timeout=300
    )
    outcome: list[BaseException] = []

    def execute() -> None:
        try:
            operator.execute({"ti": ti})  # type: ignore[typeddict-item]
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=execute)
    worker.start()
    deadline = time.monotonic() + 60
    while not docker_client.containers.list(
        ignore_removed=True, filters={"name": f"dd-test-{current}"}
    ):
        assert time.monotonic() < deadline, "the test container never started"
        assert worker.is_alive(), outcome
        time.sleep(0.2)
    assert leftovers(docker_client, stale) == []  # the killed first try's container is gone

    operator.on_kill()
    worker.join(timeout=60)

    assert not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], DeliveryError), outcome
    assert leftovers(docker_client, current) == []


# -- the operator, in a real DAG run -------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh Airflow home (SQLite DB migrated, an empty DAGs folder) for ``dag.test()``."""
    home = tmp_path_factory.mktemp("airflow-home")
    (home / "dags").mkdir()
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        airflow = Path(sys.executable).with_name("airflow")
        migrated = subprocess.run(
            [str(airflow), "db", "migrate"], capture_output=True, text=True, env=os.environ
        )
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        from airflow import settings

        settings.configure_vars()
        settings.configure_orm()
        yield home
    settings.configure_vars()
    settings.configure_orm()


def test_the_operator_in_a_dag_run_pushes_the_summary(
    test_image: str,
    airflow_home: Path,
    docker_client: docker.DockerClient,
    created_run_ids: list[str],
) -> None:
    import importlib.util

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    from docker_delivery.operators.test import attempt_run_id

    dag_id = f"dd_{PREFIX.replace('-', '_')}"
    dag_file = airflow_home / "dags" / f"{dag_id}.py"
    dag_file.write_text(textwrap.dedent(DAG_PY).format(dag_id=dag_id))
    spec = importlib.util.spec_from_file_location(dag_id, dag_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag

    run = dag.test(run_conf={"image": test_image, "greeting": "hello"})

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    for ti in run.get_task_instances():
        if ti.task_id != "build":
            created_run_ids.append(attempt_run_id(ti, ti.try_number))
    assert states == {
        "build": TaskInstanceState.SUCCESS,
        "unit": TaskInstanceState.SUCCESS,
        "failing": TaskInstanceState.FAILED,
    }
    with create_session() as session:
        pushed = {
            row.task_id: row.value
            for row in session.query(XComModel).filter_by(
                dag_id=dag_id, run_id=run.run_id, key="return_value"
            )
        }
    assert pushed["unit"] == {
        "passed": 3,
        "failed": 0,
        "errors": 0,
        "skipped": 1,
        "exit_code": 0,
        "duration_s": pushed["unit"]["duration_s"],
        "report_found": True,
    }
    assert "failing" not in pushed
    assert [name for rid in created_run_ids for name in leftovers(docker_client, rid)] == []
