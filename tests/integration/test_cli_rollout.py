"""``docker-delivery status`` and ``rollback`` against the bed: a service deployed on the engine
(minimum in-service behind its HAProxy router), read by the CLI through an Airflow docker_engine
connection; ``--watch`` printing the rollout's stages while a new release replaces it; a
rollback planned (nothing changes), then run, and recorded in the ledger."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kit.deploy import CHECK, local_router, release
from kit.loadgen import free_port
from kit.remote import SWARM_CONN_ID

from docker_delivery.cli import main
from docker_delivery.strategies.deploy import deploy
from docker_delivery.strategies.min_in_service import MinimumInService

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SERVICE_PREFIX = "st"
CLI = str(Path(sys.executable).parent / "docker-delivery")


def test_status_reads_what_runs_the_router_and_the_stage(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str,
    bed_connections: dict[str, str],
) -> None:  # fmt: skip
    router = local_router(port=free_port(), image=bed.haproxy_image, slots=6, check_interval_ms=300)
    settings = MinimumInService(replicas=3, min_in_service=2)  # one at a time
    kw: dict[str, Any] = {"router": router, "check": CHECK, "owner": "test", "log": print}
    first = deploy(docker_client, release(demo_images["v1"], service), settings, **kw)
    out = io.StringIO()
    assert main(["status", service, "test", "--engine-conn-id", SWARM_CONN_ID, "--json"],
                out=out) == 0  # fmt: skip
    status = json.loads(out.getvalue())
    assert status["stage"] == "stable" and status["public"] == "live"
    assert status["serving"] == {first.digest: 3}
    slots = status["backends"]["live"]
    assert [(s["digest"], s["admin_state"], s["health"]) for s in slots] == [
        (first.digest, "ready", "up")
    ] * 3
    assert all(s["weight"] > 0 and s["instance"].startswith(service) for s in slots)
    text = io.StringIO()
    assert main(["status", service, "test"], out=text) == 0
    assert text.getvalue().splitlines()[0] == f"{service}/test: stable: 3 of {first.digest[7:19]}"
    assert "routes: public -> live" in text.getvalue()
    print(text.getvalue())

    # --watch, in its own process, while v2 replaces v1 one instance at a time.
    watcher = subprocess.Popen(
        [CLI, "status", service, "test", "--json", "--watch", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(watcher.stdout or []), daemon=True)
    reader.start()
    try:
        time.sleep(1.5)
        second = deploy(docker_client, release(demo_images["v2"], service), settings, **kw)
        time.sleep(1.5)
    finally:
        watcher.terminate()
        watcher.wait(10)
        reader.join(10)
    seen = [json.loads(line) for line in lines]
    stages = [(s["stage"], sorted(s["serving"])) for s in seen]
    assert stages[0] == ("stable", [first.digest]), stages
    assert stages[-1] == ("stable", [second.digest]), stages
    assert any(stage == "mixed" for stage, _ in stages), stages
    assert len(seen) == len({json.dumps(s, sort_keys=True) for s in seen}), "changes only"


def test_rollback_plans_then_returns_to_the_previous_release_and_records_it(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str, tmp_path: Path,
) -> None:  # fmt: skip
    from docker_delivery.ledger import Ledger

    router = local_router(port=free_port(), image=bed.haproxy_image, slots=6, check_interval_ms=300)
    settings = MinimumInService(replicas=2, min_in_service=1)
    kw: dict[str, Any] = {"router": router, "check": CHECK, "owner": "test", "log": print}
    first = deploy(docker_client, release(demo_images["v1"], service), settings, **kw)
    second = deploy(docker_client, release(demo_images["v2"], service), settings, **kw)
    ledger = str(tmp_path / "ledger.db")
    common = [service, "test", "--docker-url", "unix:///var/run/docker.sock", "--ledger", ledger]

    def serving() -> dict[str, int]:
        out = io.StringIO()
        assert main(["status", service, "test", "--json"], out=out) == 0
        return dict(json.loads(out.getvalue())["serving"])

    plan = io.StringIO()
    assert main(["rollback", *common, "--dry-run"], out=plan) == 0, plan.getvalue()
    assert f"would roll back by redeploy, {second.digest[7:19]} -> {first.digest[7:19]}" in (
        plan.getvalue()
    )
    assert serving() == {second.digest: 2}, "a plan changes nothing"
    assert Ledger(ledger).records() == []
    done = io.StringIO()
    assert main(["rollback", *common, "--reason", "5xx after v2"], out=done) == 0, done.getvalue()
    assert f"rolled back by redeploy, {second.digest[7:19]} -> {first.digest[7:19]}" in (
        done.getvalue()
    )
    assert serving() == {first.digest: 2}
    [record] = Ledger(ledger).records()
    assert (record.deployment_type, record.outcome, record.planned) == (
        "rollback",
        "success",
        False,
    )
    assert (record.previous_digest, record.digest) == (second.digest, first.digest)
    assert record.image.endswith(f"/dd-test/demo-app@{first.digest}")
    assert record.detail.endswith(": 5xx after v2")
    assert record.detail.startswith("by cli:")


def test_status_of_a_service_that_does_not_run(bed: Any) -> None:
    out = io.StringIO()
    assert main(["status", "nothing-runs-here", "test", "--docker-url",
                 "unix:///var/run/docker.sock"], out=out) == 0  # fmt: skip
    assert out.getvalue().strip() == "nothing-runs-here/test: none"
    assert main(["status", "x", "test", "--watch", "0"], out=out) == 2
    assert main(["rollback", "nothing-runs-here", "test", "--ledger", "/nonexistent/l.db"],
                out=out) == 2  # fmt: skip
