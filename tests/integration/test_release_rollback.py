"""A release's rollback by id refuses, with nothing changed, when one of its services would go
back past a contract migration: the real engine, the bed's PostgreSQL, the demo app's
migrations (0003 drops a column the release before 0002 reads), the CLI as users run it.

The release: ``api`` (with migrations) from an image that predates 0002/0003 to the demo app's
v1, whose contract migration 0003 ran; ``web`` (no database) from v1 to v2. Going back would
take the web first: it is left serving v2, since the API cannot go back.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from kit.images import demo_variant
from kit.loadgen import free_port
from kit.pipeline import release_service
from kit.postgres import psql

from docker_delivery.images.ref import ImageRef
from docker_delivery.ledger import DeploymentRecord, Ledger
from docker_delivery.migrations import Database, MigrationRunner, MigrationSpec
from docker_delivery.strategies.deploy import deploy
from docker_delivery.strategies.state import list_running
from docker_delivery.templates.release_spec import load_release

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def before_0002(bed: Any, docker_client: Any, demo_images: dict[str, str]) -> str:
    """The demo app as it was before migrations 0002 and 0003 (ships 0001 only)."""
    return demo_variant(
        bed, docker_client, demo_images["v1"], "pre0002",
        "RUN rm /app/migrations/0002_* /app/migrations/0003_*",
    )  # fmt: skip


@pytest.fixture
def database(bed: Any) -> Iterator[tuple[str, Database]]:
    """A fresh database of the bed's PostgreSQL, and the Airflow connection naming it (as the
    containers reach it)."""
    if not bed.postgres_port:
        pytest.fail("the bed has no PostgreSQL (bed.env predates it): run tests/bed/up")
    name = f"dd_rel_{uuid.uuid4().hex[:10]}"
    psql(bed, bed.postgres_db, f"CREATE DATABASE {name}")
    conn_id = f"dd_rel_db_{uuid.uuid4().hex[:6]}"
    password = bed.postgres_password()
    host = bed.postgres_container_host
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = (
        f"postgres://{bed.postgres_user}:{quote(password, safe='')}@{host}:"
        f"{bed.postgres_port}/{name}"
    )
    db = Database.from_parts(
        host=host, port=bed.postgres_port, user=bed.postgres_user, password=password, name=name
    )
    yield conn_id, db
    del os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"]
    psql(bed, bed.postgres_db, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_release_is_not_rolled_back_past_a_contract_migration_of_any_service(
    bed: Any,
    docker_client: Any,
    demo_images: dict[str, str],
    before_0002: str,
    database: tuple[str, Database],
    tmp_path: Path,
) -> None:
    from docker_delivery.cli import main

    conn_id, db = database
    tag = uuid.uuid4().hex[:5]
    env, api, web = f"rr{tag}", f"rr{tag}-api", f"rr{tag}-web"
    specs = {
        key: release_service(
            bed,
            name,
            env,
            {"type": "min_in_service"},
            replicas=1,
            smoke=False,
            router={"port": free_port()},
            pipeline=extra,
        )
        for key, name, extra in (
            ("api", api, {"migrations": {"database_conn_id": conn_id}}),
            ("web", web, {}),
        )
    }
    for key, data in specs.items():
        (tmp_path / f"{key}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    release = {
        "release": {
            "name": f"rr{tag}", "mode": "continuous_deployment", "environments": [env],
            "services": {"api": {"spec": "api.yaml"},
                         "web": {"spec": "web.yaml", "depends_on": ["api"]}},
        }
    }  # fmt: skip
    (tmp_path / "release.yaml").write_text(yaml.safe_dump(release, sort_keys=False))
    rs = load_release(tmp_path / "release.yaml")
    ledger = Ledger(tmp_path / "ledger.db")
    order = {"api": (before_0002, demo_images["v1"]), "web": (demo_images["v1"], demo_images["v2"])}
    try:
        for key, images in order.items():
            spec = rs.pipelines[key]
            stage = spec.pipeline.stages[0]
            for image in images:
                deploy(
                    docker_client, spec.release_for(env, image), spec.deploy_settings(stage),
                    router=spec.router_for(env), check=spec.health_check_for(env),
                    owner="test", log=lambda _: None,
                )  # fmt: skip
        runner = MigrationRunner(docker_client, lambda _: None)
        for phase in ("expand", "contract"):  # v1's migrations, 0003 (contract) included
            runner.migrate(MigrationSpec(image=demo_images["v1"], phase=phase), db)
        now = datetime.now(UTC)
        for key, (before, after) in order.items():
            ledger.record(
                DeploymentRecord(
                    service=rs.pipelines[key].service, environment=env,
                    digest=str(ImageRef.parse(after).digest),
                    previous_digest=str(ImageRef.parse(before).digest), image=after,
                    deployment_type="min_in_service", outcome="success", started_at=now,
                    finished_at=now, revision=None, committed_at=None, dag_id="d", run_id="r",
                    approved_by=None, approval=None, release_id=f"rr{tag}-{env}-1",
                )
            )  # fmt: skip

        def serving() -> dict[str, set[str]]:
            return {
                name: {r.digest for r in list_running(docker_client, name, env, 8080)}
                for name in (api, web)
            }

        before = serving()
        err = io.StringIO()
        out = io.StringIO()
        import contextlib

        with contextlib.redirect_stderr(err):
            code = main(
                ["rollback", "--release", f"rr{tag}-{env}-1", "--spec",
                 str(tmp_path / "release.yaml"), "--ledger", ledger.where],
                out=out,
            )  # fmt: skip
        message = err.getvalue()
        print(out.getvalue(), message)
        assert code == 1
        assert "cannot go back, nothing was changed" in message
        assert f"{api}:" in message and "0003_drop_greetings_message" in message, message
        assert serving() == before  # the web too: it would have gone first
        assert ledger.records(run_id="r") and not [
            r for r in ledger.records() if r.deployment_type == "rollback"
        ]
    finally:
        for container in docker_client.containers.list(
            ignore_removed=True, all=True, filters={"name": f"rr{tag}"}
        ):
            container.remove(force=True)
        for network in docker_client.networks.list(names=[f"dd-rr{tag}"]):
            network.remove()
