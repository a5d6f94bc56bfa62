"""Shared fixtures. Integration tests reach the real test bed that tests/bed/up brings up.

A test that needs the bed fails (never skips) when the bed is not there: run `make test`, or
`tests/bed/up` first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers: the kit package
# Airflow reads its settings when first imported: point it at the project's home and DAGs first.
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# Tests run in parallel (pytest-xdist): each worker has a metadata database of its own, since
# SQLite takes one writer at a time and DAG runs write all the time.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault(
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        f"sqlite:///{ROOT / '.airflow' / ('tests-' + os.environ['PYTEST_XDIST_WORKER'])}.db",
    )


@dataclass(frozen=True)
class Bed:
    """Where the test bed's parts are (read from the bed.env that tests/bed/up writes)."""

    dir: Path
    registry: str
    registry_log: Path
    python_image: str
    haproxy_image: str
    # PostgreSQL for migrations: the host reaches it at postgres_host, containers at
    # postgres_container_host (the docker0 gateway); the password is in a file, never in bed.env.
    postgres_host: str = ""
    postgres_container_host: str = ""
    postgres_port: int = 0
    postgres_user: str = ""
    postgres_db: str = ""
    postgres_password_file: Path | None = None
    postgres_bin: Path | None = None
    # MariaDB (MySQL) for the ledger: on mysql_host only (loopback); the `ledger` user may create
    # databases (tests/kit/mysql.py); its password is in a file, never in bed.env.
    mysql_host: str = ""
    mysql_port: int = 0
    mysql_user: str = ""
    mysql_password_file: Path | None = None
    # The remote machine: its engine (TLS), its address, and the subnets of its containers and
    # of the Swarm's overlays, which this machine cannot reach.
    remote_url: str = ""
    remote_tls: Path | None = None
    remote_host: str = ""
    remote_net: str = ""
    remote_private_nets: tuple[str, ...] = ()

    def postgres_password(self) -> str:
        if self.postgres_password_file is None or not self.postgres_password_file.exists():
            pytest.fail("the bed has no PostgreSQL (bed.env predates it): run tests/bed/up")
        return self.postgres_password_file.read_text().strip()

    def mysql_password(self) -> str:
        if self.mysql_password_file is None or not self.mysql_password_file.exists():
            pytest.fail("the bed has no MariaDB (bed.env predates it): run tests/bed/up")
        return self.mysql_password_file.read_text().strip()

    def registry_log_size(self) -> int:
        return self.registry_log.stat().st_size if self.registry_log.exists() else 0

    def registry_log_since(self, offset: int) -> str:
        with self.registry_log.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")


def _bed_dir() -> Path:
    if "DOCKER_DELIVERY_BED_DIR" in os.environ:
        return Path(os.environ["DOCKER_DELIVERY_BED_DIR"])
    if os.geteuid() == 0:
        return Path("/var/lib/docker-delivery-bed")
    state = os.environ.get("XDG_STATE_HOME", str(Path.home() / ".local/state"))
    return Path(state) / "docker-delivery-bed"


@pytest.fixture(scope="session")
def bed() -> Bed:
    env_file = _bed_dir() / "bed.env"
    if not env_file.exists():
        pytest.fail(f"the test bed is not up ({env_file} is missing): run tests/bed/up")
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"the bed's Docker Engine does not answer: {probe.stderr.strip()}")
    return Bed(
        dir=Path(values["DOCKER_DELIVERY_BED_DIR"]),
        registry=values["DOCKER_DELIVERY_BED_REGISTRY"],
        registry_log=Path(values["DOCKER_DELIVERY_BED_REGISTRY_LOG"]),
        python_image=values["DOCKER_DELIVERY_BED_PYTHON_IMAGE"],
        haproxy_image=values["DOCKER_DELIVERY_BED_HAPROXY_IMAGE"],
        postgres_host=values.get("DOCKER_DELIVERY_BED_POSTGRES_HOST", ""),
        postgres_container_host=values.get("DOCKER_DELIVERY_BED_POSTGRES_CONTAINER_HOST", ""),
        postgres_port=int(values.get("DOCKER_DELIVERY_BED_POSTGRES_PORT") or 0),
        postgres_user=values.get("DOCKER_DELIVERY_BED_POSTGRES_USER", ""),
        postgres_db=values.get("DOCKER_DELIVERY_BED_POSTGRES_DB", ""),
        postgres_password_file=_path(values.get("DOCKER_DELIVERY_BED_POSTGRES_PASSWORD_FILE")),
        postgres_bin=_path(values.get("DOCKER_DELIVERY_BED_POSTGRES_BIN")),
        mysql_host=values.get("DOCKER_DELIVERY_BED_MYSQL_HOST", ""),
        mysql_port=int(values.get("DOCKER_DELIVERY_BED_MYSQL_PORT") or 0),
        mysql_user=values.get("DOCKER_DELIVERY_BED_MYSQL_USER", ""),
        mysql_password_file=_path(values.get("DOCKER_DELIVERY_BED_MYSQL_PASSWORD_FILE")),
        remote_url=values.get("DOCKER_DELIVERY_BED_REMOTE_URL", ""),
        remote_tls=_path(values.get("DOCKER_DELIVERY_BED_REMOTE_TLS")),
        remote_host=values.get("DOCKER_DELIVERY_BED_REMOTE_HOST", ""),
        remote_net=values.get("DOCKER_DELIVERY_BED_REMOTE_NET", ""),
        remote_private_nets=tuple(
            n for n in values.get("DOCKER_DELIVERY_BED_REMOTE_PRIVATE_NETS", "").split(",") if n
        ),
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's metadata database (SQLite under AIRFLOW_HOME), migrated, with its DAG bundles
    registered (a DAG run writes its DAG under the bundle's name); seconds when current."""
    airflow = Path(sys.executable).parent / "airflow"
    run = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True)
    if run.returncode != 0:
        pytest.fail(f"airflow db migrate failed: {run.stderr[-2000:]}")
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    DagBundlesManager().sync_bundles_to_db()


@pytest.fixture(scope="session")
def demo_images(bed: Bed, docker_client: object) -> dict[str, str]:
    """The demo app built for releases v1, v2 and v3 (different digests), pushed to the bed."""
    import hashlib

    from docker_delivery.images.build import BuildSpec, ImageBuilder
    from docker_delivery.images.registry import RegistryClient

    app = ROOT / "dags" / "demo_app"
    source = hashlib.sha1()
    for path in sorted(p for p in app.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        source.update(path.read_bytes())
    refs = {}
    with RegistryClient(bed.registry) as registry:
        for release in ("v1", "v2", "v3"):
            spec = BuildSpec(
                repository=f"{bed.registry}/dd-test/demo-app",
                revision=source.hexdigest()[:32] + release,
                context=str(app),
                build_args={"BASE_IMAGE": bed.python_image, "RELEASE": release},
            )
            result = ImageBuilder(docker_client, registry, log=lambda _: None).build(spec)  # type: ignore[arg-type]
            refs[release] = str(result.ref)
    return refs


@pytest.fixture(scope="session")
def moto() -> Iterator[str]:
    """moto's server on loopback (this test process's own): its URL. The ``aws_default``
    connection points at it while the session runs. Its ECS services report every task running
    (moto's deployments do not progress by themselves)."""
    from kit.moto import CREDENTIALS, aws_connection, environment, moto_server

    with (
        moto_server(MOTO_ECS_SERVICE_RUNNING="1000") as url,  # deployments complete
        environment(AIRFLOW_CONN_AWS_DEFAULT=aws_connection(url), **CREDENTIALS),
    ):
        yield url


@pytest.fixture(scope="session")
def bed_connections(bed: Bed) -> dict[str, str]:
    """The bed's ``docker_engine`` connections (kit.remote.bed_connections), set in this process's
    environment (and so in every Airflow process a test starts from it)."""
    from kit.remote import bed_connections

    if not bed.remote_url or bed.remote_tls is None:
        pytest.fail("the bed has no remote machine (bed.env predates it): run tests/bed/up")
    conns = bed_connections(bed)
    os.environ.update(conns)
    return conns


@pytest.fixture(scope="session")
def remote_engine(bed: Bed, bed_connections: dict[str, str]) -> Iterator[object]:
    """A client of the remote machine's engine, made as operators make it: from a
    ``docker_engine`` connection (``dd_bed_remote``) holding the bed's CA and client PEM texts."""
    from kit.loadgen import allow_network
    from kit.remote import REMOTE_CONN_ID

    from docker_delivery.hooks.engine import engine_client

    allow_network(bed.remote_net)  # load goes to the remote machine's published ports
    client = engine_client(engine_conn_id=REMOTE_CONN_ID)
    yield client
    client.close()


@pytest.fixture
def remote_service(request: pytest.FixtureRequest, remote_engine: object) -> Iterator[str]:
    """:func:`service`, on the remote engine."""
    import uuid

    from kit.cleanup import remove_service

    name = f"{getattr(request.module, 'SERVICE_PREFIX', 'svc')}{uuid.uuid4().hex[:6]}"
    yield name
    remove_service(remote_engine, name)


@pytest.fixture(scope="session")
def docker_client(bed: Bed, bed_connections: dict[str, str]) -> Iterator[object]:
    """This machine's engine, the manager of the bed's two-node Swarm, made as operators make
    it: from its ``docker_engine`` connection, which names the second node's engine."""
    from kit.remote import SWARM_CONN_ID

    from docker_delivery.hooks.engine import engine_client

    client = engine_client(engine_conn_id=SWARM_CONN_ID)
    yield client
    client.close()


@pytest.fixture
def service(request: pytest.FixtureRequest, docker_client: object) -> Iterator[str]:
    """A new service name (the test module's SERVICE_PREFIX and 6 hex digits); whatever the test
    left of that service is removed after it (tests/cleanup.py)."""
    import uuid

    from kit.cleanup import remove_service

    name = f"{getattr(request.module, 'SERVICE_PREFIX', 'svc')}{uuid.uuid4().hex[:6]}"
    yield name
    remove_service(docker_client, name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/integration and tests/e2e carry their marker even if a file forgets it.
    The end-to-end files come first, then the integration ones: pytest-xdist (``make test``:
    ``--dist loadfile --no-loadscope-reorder``) hands files out in this order, so the longest
    start at once instead of trailing the run."""
    rank = {"e2e": 0, "integration": 1}
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        if "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
    items.sort(
        key=lambda i: min((rank[p] for p in Path(str(i.fspath)).parts if p in rank), default=2)
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """An integration or end-to-end test never skips: a skip is reported as a failure."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and (
        item.get_closest_marker("integration") or item.get_closest_marker("e2e")
    ):
        report.outcome = "failed"
        report.longrepr = f"integration tests must not skip: {report.longrepr}"
