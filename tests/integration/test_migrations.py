"""Database migrations on the real test bed: the demo app's image, its migrate.py, PostgreSQL.

Every test gets a database of its own on the bed's PostgreSQL (created by the bed's `demo` user,
dropped afterwards). The demo app is built by the session's ``demo_images`` fixture; variants of
it (a slow migration, a failing one, an old release that predates 0002/0003) are built FROM it by
digest and pushed to the bed registry. Every log the domain writes is checked for the password.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import docker
import pendulum
import pytest
from kit.logs import Lines

from docker_delivery.errors import InvalidReference
from docker_delivery.images.ref import ImageRef
from docker_delivery.migrations import (
    SECRET_PATH,
    Database,
    MigrationFailed,
    MigrationLock,
    MigrationLocked,
    MigrationResult,
    MigrationRunner,
    MigrationSpec,
    MigrationTimeout,
    RollbackPastContract,
)
from docker_delivery.targets.labels import LABEL_DATABASE, LABEL_MIGRATION_RUN

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SLOW_SQL = "-- 0004 (expand): slow on purpose, to catch two runs overlapping.\n" + (
    "SELECT pg_sleep(2);\nCREATE TABLE slow_marker (id int);\n"
)
BROKEN_SQL = (
    "-- 0004 (expand): its first statement works, its second cannot.\n"
    "ALTER TABLE greetings ADD COLUMN doomed int;\n"
    "ALTER TABLE no_such_table ADD COLUMN y int;\n"
)


@dataclass
class Postgres:
    """The bed's PostgreSQL, seen from the host (psql) and from containers (URLs)."""

    bed: Any
    password: str

    def psql(self, database: str, sql: str) -> list[list[str]]:
        assert self.bed.postgres_bin is not None, "bed.env has no DOCKER_DELIVERY_BED_POSTGRES_BIN"
        run = subprocess.run(
            [
                str(self.bed.postgres_bin / "psql"),
                "-X",
                "-tA",
                "-F|",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.bed.postgres_host,
                "-p",
                str(self.bed.postgres_port),
                "-U",
                self.bed.postgres_user,
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": self.password},
            timeout=30,
        )
        assert run.returncode == 0, run.stderr
        return [line.split("|") for line in run.stdout.splitlines() if line]

    def database(self, name: str, host: str | None = None) -> Database:
        return Database.from_parts(
            host=host or self.bed.postgres_container_host,
            port=self.bed.postgres_port,
            user=self.bed.postgres_user,
            password=self.password,
            name=name,
        )


@pytest.fixture(scope="module")
def pg(bed: Any) -> Postgres:
    if not bed.postgres_port:
        pytest.fail("the bed has no PostgreSQL (bed.env predates it): run tests/bed/up")
    return Postgres(bed, bed.postgres_password())


@pytest.fixture
def fresh_db(pg: Postgres, docker_client: docker.DockerClient) -> Iterator[str]:
    """A new, empty database owned by the bed's demo user; dropped after the test."""
    name = f"dd_mig_{uuid.uuid4().hex[:10]}"
    pg.psql(pg.bed.postgres_db, f"CREATE DATABASE {name}")
    yield name
    key = pg.database(name).key
    left = docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{LABEL_DATABASE}={key}"}
    )
    pg.psql(pg.bed.postgres_db, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    assert [c.name for c in left] == [], "migration containers or locks left behind"


@pytest.fixture
def logs(pg: Postgres) -> Iterator[Callable[[], Lines]]:
    """Domain log callbacks; after the test, none of them may hold the password."""
    made: list[Lines] = []

    def make() -> Lines:
        made.append(Lines())
        return made[-1]

    yield make
    for log in made:
        assert pg.password not in log.text, "the database password reached the domain log"


@pytest.fixture(scope="module")
def demo_image(demo_images: dict[str, str]) -> str:
    return str(ImageRef.parse(demo_images["v1"]).without_tag())


@pytest.fixture(scope="module")
def variants(
    bed: Any,
    demo_image: str,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """The demo image plus a slow or a failing 0004, or minus 0002 and 0003; pinned refs."""
    steps = {
        "slow": ("0004_slow.expand.sql", SLOW_SQL, ""),
        "broken": ("0004_broken.expand.sql", BROKEN_SQL, ""),
        "old": ("", "", "RUN rm /app/migrations/0002_* /app/migrations/0003_*\n"),
    }
    repository = f"{bed.registry}/dd-test/demo-migrations"
    refs = {}
    for variant, (name, sql, run) in steps.items():
        context = tmp_path_factory.mktemp(f"migrations-{variant}")
        dockerfile = f"FROM {demo_image}\n{run}"
        if name:
            (context / name).write_text(sql)
            dockerfile += f"COPY {name} /app/migrations/{name}\n"
        (context / "Dockerfile").write_text(dockerfile)
        tag = variant + hashlib.sha256(dockerfile.encode() + sql.encode()).hexdigest()[:16]
        image, _ = docker_client.images.build(path=str(context), tag=f"{repository}:{tag}", rm=True)
        for event in docker_client.images.push(repository, tag=tag, stream=True, decode=True):
            assert "error" not in event, event
        image.reload()
        digests = [d for d in image.attrs["RepoDigests"] if d.startswith(repository + "@")]
        refs[variant] = digests[0]
    return refs


def applied_rows(pg: Postgres, db: str) -> list[list[str]]:
    return pg.psql(db, "SELECT version, name, phase, applied_by FROM schema_migrations ORDER BY 1")


def columns(pg: Postgres, db: str, table: str) -> list[str]:
    sql = (
        "SELECT column_name FROM information_schema.columns "
        f"WHERE table_name = '{table}' ORDER BY ordinal_position"
    )
    return [row[0] for row in pg.psql(db, sql)]


# -- the domain ----------------------------------------------------------------------------------


def test_a_migration_run_twice_applies_once(
    pg: Postgres,
    fresh_db: str,
    demo_image: str,
    docker_client: docker.DockerClient,
    logs: Callable[[], Lines],
) -> None:
    log = logs()
    runner = MigrationRunner(docker_client, log)
    database = pg.database(fresh_db)
    spec = MigrationSpec(image=demo_image, phase="expand", timeout=120)

    first = runner.migrate(spec, database)
    again = runner.migrate(spec, database)
    contract = runner.migrate(replace(spec, phase="contract"), database)
    contract_again = runner.migrate(replace(spec, phase="contract"), database)

    assert (first.version_before, first.version_after) == (0, 2)
    assert first.applied == ("0001_create_greetings", "0002_greetings_body")
    assert (again.version_before, again.version_after, again.applied) == (2, 2, ())
    assert (contract.version_before, contract.version_after) == (2, 3)
    assert contract.applied == ("0003_drop_greetings_message",)
    assert (contract_again.version_before, contract_again.applied) == (3, ())
    assert first.digest == ImageRef.parse(demo_image).digest and first.phase == "expand"
    assert first.database == f"{pg.bed.postgres_container_host}:{pg.bed.postgres_port}/{fresh_db}"
    assert applied_rows(pg, fresh_db) == [
        ["1", "create_greetings", "expand", demo_image],
        ["2", "greetings_body", "expand", demo_image],
        ["3", "drop_greetings_message", "contract", demo_image],
    ]
    assert columns(pg, fresh_db, "greetings") == ["id", "created_at", "body"]
    assert "applying 0002_greetings_body (expand)" in log.text  # the tool's output, streamed
    assert "applied nothing: it was up to date" in log.text
    json.dumps(first.as_dict())


def test_two_migrations_started_at_once_never_run_together(
    pg: Postgres, fresh_db: str, variants: dict[str, str], logs: Callable[[], Lines]
) -> None:
    """The engine lock: the second waits for the first, then finds nothing to do."""
    spec = MigrationSpec(image=variants["slow"], phase="expand", timeout=120, lock_wait=120)
    barrier = threading.Barrier(2)

    def migrate(log: Lines) -> MigrationResult:
        client = docker.from_env()
        try:
            barrier.wait()
            return MigrationRunner(client, log).migrate(spec, pg.database(fresh_db))
        finally:
            client.close()

    pair = [logs(), logs()]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(migrate, pair))

    first, second = sorted(results, key=lambda r: r.started_at)
    assert first.finished_at <= second.started_at, (first, second)  # never at the same time
    assert first.applied == ("0001_create_greetings", "0002_greetings_body", "0004_slow")
    assert (second.version_before, second.version_after, second.applied) == (4, 4, ())
    waited = [log for log in pair if "waiting for migration lock" in log.text]
    assert len(waited) == 1
    assert [row[0] for row in applied_rows(pg, fresh_db)] == ["1", "2", "4"]


def test_the_runner_advisory_lock_serialises_runs_the_engine_lock_cannot_see(
    pg: Postgres, fresh_db: str, variants: dict[str, str], logs: Callable[[], Lines]
) -> None:
    """Two names of one database (two engine lock keys): PostgreSQL's advisory lock still holds."""
    alias = "pg-alias.bed.internal"
    spec = MigrationSpec(
        image=variants["slow"],
        phase="expand",
        timeout=120,
        extra_hosts={alias: pg.bed.postgres_container_host},
    )
    databases = [pg.database(fresh_db), pg.database(fresh_db, host=alias)]
    assert databases[0].key != databases[1].key
    barrier = threading.Barrier(2)

    def migrate(args: tuple[Database, Lines]) -> MigrationResult:
        database, log = args
        client = docker.from_env()
        try:
            barrier.wait()
            return MigrationRunner(client, log).migrate(spec, database)
        finally:
            client.close()

    pair = [logs(), logs()]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(migrate, zip(databases, pair, strict=True)))

    assert all(r.version_after == 4 for r in results)
    [waiter] = [log for log in pair if "[migrate] waiting for the migration lock" in log.text]
    [worker] = [log for log in pair if log is not waiter]
    assert "[migrate] got the migration lock" in waiter.text
    assert "0 expand migration(s) to apply" in waiter.text  # the other had done it all
    assert "applied 0004_slow" in worker.text
    assert [row[0] for row in applied_rows(pg, fresh_db)] == ["1", "2", "4"]


def test_a_failing_migration_fails_with_postgres_message_and_keeps_the_last_good_version(
    pg: Postgres,
    fresh_db: str,
    variants: dict[str, str],
    docker_client: docker.DockerClient,
    logs: Callable[[], Lines],
) -> None:
    runner = MigrationRunner(docker_client, logs())
    spec = MigrationSpec(image=variants["broken"], phase="expand", timeout=120)

    with pytest.raises(MigrationFailed) as caught:
        runner.migrate(spec, pg.database(fresh_db))

    error = caught.value
    assert 'relation "no_such_table" does not exist' in str(error)  # PostgreSQL's own words
    assert "0004_broken failed and was rolled back" in str(error)
    assert (error.version_before, error.version_after, error.exit_code) == (0, 2, 1)
    assert pg.password not in str(error)
    assert [row[0] for row in applied_rows(pg, fresh_db)] == ["1", "2"]
    assert "doomed" not in columns(pg, fresh_db, "greetings")  # its first statement is undone


def test_a_migration_past_its_timeout_is_killed_and_leaves_nothing(
    pg: Postgres,
    fresh_db: str,
    demo_image: str,
    docker_client: docker.DockerClient,
    logs: Callable[[], Lines],
) -> None:
    runner = MigrationRunner(docker_client, logs())
    spec = MigrationSpec(image=demo_image, command=("sleep", "60"), timeout=1.5)
    started = time.monotonic()

    with pytest.raises(MigrationTimeout, match=r"did not finish within 1.5s and was killed"):
        runner.migrate(spec, pg.database(fresh_db))

    assert time.monotonic() - started < 20
    # fresh_db checks that neither the container nor the lock of this database is left


def test_a_second_migration_gives_up_when_the_lock_stays_taken(
    pg: Postgres,
    fresh_db: str,
    demo_image: str,
    docker_client: docker.DockerClient,
    logs: Callable[[], Lines],
) -> None:
    database = pg.database(fresh_db)
    holder = MigrationLock(
        docker_client, database, owner="dag/run/other_task/-1", image=demo_image, wait=0, log=logs()
    )
    holder.acquire()
    try:
        log = logs()
        with pytest.raises(MigrationLocked) as caught:
            MigrationRunner(docker_client, log).migrate(
                MigrationSpec(image=demo_image, lock_wait=0.5), database
            )
    finally:
        holder.release()
    assert "dag/run/other_task/-1" in str(caught.value) and "docker rm" in str(caught.value)
    assert "waiting for migration lock" in log.text
    assert pg.psql(fresh_db, "SELECT to_regclass('schema_migrations') IS NULL") == [["t"]]


def test_a_tag_only_image_is_refused_before_anything_runs(
    demo_image: str, docker_client: docker.DockerClient
) -> None:
    tag_only = demo_image.split("@")[0] + ":v1"
    before = docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": LABEL_MIGRATION_RUN}
    )

    with pytest.raises(InvalidReference, match="not pinned by digest"):
        MigrationSpec(image=tag_only)

    after = docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": LABEL_MIGRATION_RUN}
    )
    assert {c.id for c in after} <= {c.id for c in before}


def test_check_rollback_refuses_to_go_back_past_a_contract_migration(
    pg: Postgres,
    fresh_db: str,
    demo_image: str,
    variants: dict[str, str],
    docker_client: docker.DockerClient,
    logs: Callable[[], Lines],
) -> None:
    runner = MigrationRunner(docker_client, logs())
    database = pg.database(fresh_db)
    current = MigrationSpec(image=demo_image, phase="expand", timeout=120)
    old = MigrationSpec(image=variants["old"], timeout=120)  # ships 0001 only
    runner.migrate(current, database)

    after_expand = runner.check_rollback(old, database)  # an expand only added: allowed
    assert after_expand.tolerated == ("0002_greetings_body",)
    runner.migrate(replace(current, phase="contract"), database)
    with pytest.raises(RollbackPastContract) as caught:
        runner.check_rollback(old, database)

    assert caught.value.contracts == ("0003_drop_greetings_message",)
    message = str(caught.value)
    assert "refusing to roll back" in message and demo_image in message  # who applied it
    assert "Roll forward instead" in message
    assert runner.check_rollback(current, database).tolerated == ()  # the same image: fine


# -- the operator, in a real DAG run -------------------------------------------------------------


def test_the_operator_keeps_the_password_out_of_task_log_xcom_and_containers(
    pg: Postgres,
    fresh_db: str,
    demo_image: str,
    docker_client: docker.DockerClient,
    airflow_db: None,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.sdk import DAG
    from airflow.sdk._shared.secrets_masker import redact
    from airflow.utils.session import create_session

    from docker_delivery.operators.migrate import MigrateDatabaseOperator

    conn_id = f"dd_migrate_{fresh_db}"
    host, port = pg.bed.postgres_container_host, pg.bed.postgres_port
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        f"postgres://{pg.bed.postgres_user}:{pg.password}@{host}:{port}/{fresh_db}",
    )
    # A command that prints the URL it is given: the log must show it masked, never in clear.
    leaky = ["sh", "-c", 'echo "url is $(cat $DATABASE_URL_FILE)"; sleep 1; exec "$@"', "sh"]
    errors: list[BaseException] = []
    dag_id = f"dd_test_migrate_{fresh_db}"
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
        MigrateDatabaseOperator(
            task_id="expand",
            image="{{ params.image }}",
            database_conn_id=conn_id,
            command=[*leaky, "python3", "/app/migrate.py", "up", "--phase", "{phase}"],
            env={"GREETING": "{{ params.greeting }}"},
            timeout=120,
            params={"image": demo_image, "greeting": "hello"},
        )
        MigrateDatabaseOperator(
            task_id="tag_only",
            image=demo_image.split("@")[0] + ":v1",
            database_conn_id=conn_id,
            on_failure_callback=lambda context: errors.append(context["exception"]),
        )
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)

    seen: dict[str, dict[str, Any]] = {}  # every container of this database while it lived
    stop = threading.Event()
    key = pg.database(fresh_db).key

    def watch() -> None:
        client = docker.from_env()
        while not stop.is_set():
            with contextlib.suppress(docker.errors.APIError):
                for c in client.containers.list(
                    ignore_removed=True, all=True, filters={"label": f"{LABEL_DATABASE}={key}"}
                ):
                    seen[c.name] = c.attrs
            time.sleep(0.05)
        client.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run = dag.test()
    finally:
        stop.set()
        watcher.join(10)
    task_log = "".join(capfd.readouterr())

    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {"expand": "success", "tag_only": "failed"}
    with create_session() as session:
        xcoms = [
            row.value
            for row in session.query(XComModel).filter_by(dag_id=dag_id, run_id=run.run_id)
        ]
        rendered = [
            row.rendered_fields
            for row in session.query(RenderedTaskInstanceFields).filter_by(dag_id=dag_id)
        ]
    [result] = xcoms
    assert (result["version_before"], result["version_after"]) == (0, 2)
    assert result["applied"] == ["0001_create_greetings", "0002_greetings_body"]
    # The tag-only task failed on its reference, before it read the connection or ran anything.
    assert isinstance(errors[0], InvalidReference) and "not pinned" in str(errors[0])
    assert [row[0] for row in applied_rows(pg, fresh_db)] == ["1", "2"]

    assert "url is ***" in task_log  # the container printed the URL; the log has it masked
    assert "applying 0002_greetings_body" in task_log
    migration = [a for name, a in seen.items() if a["Config"]["Labels"].get(LABEL_MIGRATION_RUN)]
    assert migration, f"the watcher saw no migration container: {sorted(seen)}"
    assert all(f"DATABASE_URL_FILE={SECRET_PATH}" in a["Config"]["Env"] for a in migration)
    for where, text in {
        "task log": task_log,
        "XCom": json.dumps(xcoms),
        "rendered fields": json.dumps(rendered, default=str),
        "container inspect (labels, env, command)": json.dumps(seen),
    }.items():
        assert pg.password not in text, f"the database password reached the {where}"
    assert pg.password not in redact(f"x {pg.password} y")  # registered with Airflow's masker


def test_the_demo_app_greets_from_the_database(
    pg: Postgres,
    fresh_db: str,
    demo_image: str,
    docker_client: docker.DockerClient,
    logs: Callable[[], Lines],
) -> None:
    """After expand and contract, the app (DATABASE_URL set) writes and reads /greetings."""
    runner = MigrationRunner(docker_client, logs())
    database = pg.database(fresh_db)
    runner.migrate(MigrationSpec(image=demo_image, phase="expand", timeout=120), database)
    runner.migrate(MigrationSpec(image=demo_image, phase="contract", timeout=120), database)
    app = docker_client.containers.run(
        demo_image,
        detach=True,
        environment={"DATABASE_URL": database.url},
        ports={"8080/tcp": ("127.0.0.1", None)},
        labels={"io.docker-delivery.managed": "true"},
    )
    try:
        app.reload()
        port = app.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, app.logs().decode()
                time.sleep(0.1)
        post = urllib.request.Request(
            f"{base}/greetings", data=b'{"message": "hello"}', method="POST"
        )
        with urllib.request.urlopen(post, timeout=10) as answer:
            assert answer.status == 201
        with urllib.request.urlopen(f"{base}/greetings", timeout=10) as answer:
            greetings = json.loads(answer.read())["greetings"]
        logged = app.logs().decode()
    finally:
        app.remove(force=True)
    assert [g["message"] for g in greetings] == ["hello"]
    assert pg.psql(fresh_db, "SELECT body FROM greetings") == [["hello"]]
    assert f"database={database.display}" in logged and pg.password not in logged
