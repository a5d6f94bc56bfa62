"""TestImageOperator: run a test command inside the built image, by digest."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from airflow.sdk import BaseOperator, Context

from docker_delivery.hooks.engine import engine_client
from docker_delivery.images.testing import ImageTest, ImageTestRunner, Sidecar
from docker_delivery.targets.engine_errors import engine_calls


class TestImageOperator(BaseOperator):
    """Run ``command`` in a container of the digest-pinned ``image``, next to its ``sidecars``.

    Returns (pushes to XCom) the ``TestSummary`` as a dict; fails with ``TestsFailed`` when the
    command exits non-zero or the JUnit report at ``junit_path`` counts failures or errors, and
    with ``TestTimeout`` after ``test_timeout`` s. What it starts is removed when it ends, when
    it is killed (``on_kill``), and by its next try. See ``docker_delivery.images.testing``.
    """

    __test__: ClassVar[bool] = False
    template_fields: Sequence[str] = ("image", "command", "environment", "junit_path")

    def __init__(
        self,
        *,
        image: str,
        command: list[str] | str,
        shell: bool = False,
        environment: Mapping[str, str] | None = None,
        sidecars: Sequence[Sidecar | Mapping[str, Any]] = (),
        test_timeout: float = 1800,
        junit_path: str | None = None,
        workdir: str | None = None,
        user: str | None = None,
        docker_url: str | None = None,
        engine_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.image = image
        self.command = command
        self.shell = shell
        self.environment = dict(environment or {})
        self.sidecars = tuple(Sidecar.coerce(sidecar) for sidecar in sidecars)
        self.test_timeout = test_timeout
        self.junit_path = junit_path
        self.workdir = workdir
        self.user = user
        self.docker_url = docker_url
        self.engine_conn_id = engine_conn_id
        self._runner: ImageTestRunner | None = None
        self._run_id: str | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        test = ImageTest(
            image=self.image,
            command=self.command,
            shell=self.shell,
            env={str(key): str(value) for key, value in self.environment.items()},
            sidecars=self.sidecars,
            timeout=self.test_timeout,
            junit_path=self.junit_path,
            workdir=self.workdir,
            user=self.user,
        )
        ti = context["ti"]
        self._runner = ImageTestRunner(
            engine_client(self.docker_url, engine_conn_id=self.engine_conn_id), self.log.info
        )
        for earlier_try in range(1, ti.try_number):  # leftovers of a killed earlier try
            self._runner.cleanup(attempt_run_id(ti, earlier_try))
        self._run_id = attempt_run_id(ti, ti.try_number)
        with engine_calls(f"testing {self.image}"):
            return self._runner.run(test, self._run_id).as_dict()

    def on_kill(self) -> None:
        if self._runner is not None and self._run_id is not None:
            self._runner.cleanup(self._run_id)


def attempt_run_id(ti: Any, try_number: int) -> str:
    """A short, readable run id unique to one try of one (mapped) task instance."""
    map_index = ti.map_index if ti.map_index is not None else -1
    key = f"{ti.dag_id}\0{ti.task_id}\0{ti.run_id}\0{map_index}\0{try_number}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    mapped = f".m{map_index}" if map_index >= 0 else ""
    return f"{ti.task_id[:32]}{mapped}.t{try_number}-{digest}"
