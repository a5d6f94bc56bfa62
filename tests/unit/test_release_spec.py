"""A release of several services: its file checked with field paths, its plan (services in
dependency order, checks of the whole, promotions after them, rollbacks in reverse order), its
DAG, and the going back of a whole release planned from the ledger."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from docker_delivery.errors import RollbackImpossible, SpecInvalid
from docker_delivery.ledger import DeploymentRecord
from docker_delivery.strategies.release_rollback import roll_back_release
from docker_delivery.templates.release_plan import plan_release
from docker_delivery.templates.release_spec import load_release, release_id

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "dags" / "pipelines" / "shop"


def shop(**changes: Any) -> dict[str, Any]:
    """The example release as data, its services' specs inline; ``changes`` to its section."""
    section = yaml.safe_load((SHOP / "release.yaml").read_text())["release"]
    for entry in section["services"].values():
        entry["spec"] = yaml.safe_load((SHOP / entry["spec"]).read_text())
        entry["spec"]["pipeline"]["build"]["context"] = str(ROOT / "dags" / "demo_app")
    section.update(changes)
    return {"release": section}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecInvalid) as caught:
        load_release(data, environ={})
    return caught.value.problems


def test_the_example_release_plans_services_in_order_then_checks_then_promotions() -> None:
    rs = load_release(SHOP / "release.yaml", environ={})
    assert rs.order == ["api", "web"] and rs.dag_id == "deliver_shop"
    ids = [t.task_id for t in plan_release(rs)]
    at = ids.index
    assert at("staging.api.deploy") < at("staging.web.deploy") < at("staging.check_web_reaches_api")
    assert at("staging.check_web_reaches_api") < at("staging.api.promote")
    assert at("staging.check_web_reaches_api") < at("staging.web.retire")
    assert ids[-4:] == [
        "staging.release_failed", "staging.roll_back_web", "staging.roll_back_api",
        "staging.record",
    ]  # fmt: skip
    tasks = {t.task_id: t for t in plan_release(rs)}
    assert tasks["staging.roll_back_api"].upstream == (
        "staging.release_failed", "staging.roll_back_web",
    )  # fmt: skip
    assert tasks["staging.record"].trigger_rule == "all_done"
    assert "staging.record" not in [t for t in ids if t.startswith("staging.api.")]


def test_dependencies_decide_the_order_whatever_the_listing() -> None:
    data = shop()
    services = data["release"]["services"]
    data["release"]["services"] = {"web": services["web"], "api": services["api"]}
    assert load_release(data, environ={}).order == ["api", "web"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["services"]["api"].update(depends_on=["web"]),
         "release.services: the dependencies go round in a circle (api, web)"),
        (lambda r: r["services"]["web"].update(depends_on=["db"]),
         "release.services.web.depends_on: no service 'db' in this release"),
        (lambda r: r["checks"][0]["http"].update(service="cart"),
         "release.checks[web_reaches_api].http.service: no service 'cart'"),
        (lambda r: r.update(mode="continuous_delivery"),
         "release.mode: continuous_delivery needs approve"),
        (lambda r: r.update(environments=["staging", "production"]),
         "release.services.api.spec: its stages deliver ['staging']; the release delivers"),
        (lambda r: r["services"]["web"]["spec"]["pipeline"]["stages"][0].update(
            alternatives=[{"type": "ab"}]),
         "release.services.web.spec: pipeline.stages[staging].alternatives: a release's stage"),
        (lambda r: r["services"]["web"].update(image="127.0.0.1:5000/shop/web:v2"),
         "release.services.web.image:"),
        (lambda r: r["services"]["web"]["spec"]["environments"]["staging"]["router"].update(
            port=18381),
         "environments.staging.router.port 18381 is also api's port in staging"),
        (lambda r: r["services"]["api"]["spec"]["environments"]["staging"].update(replicas="x"),
         "release.services.api.spec (<api>): environments.staging.replicas:"),
    ],
)  # fmt: skip
def test_a_bad_release_is_refused_with_the_path_of_each_problem(change: Any, expected: str) -> None:
    data = copy.deepcopy(shop())
    change(data["release"])
    found = problems(data)
    assert any(expected in p for p in found), found


def test_release_ids_are_short_stable_and_per_environment() -> None:
    a = release_id("shop", "staging", "deliver_shop", "manual__1")
    assert a == release_id("shop", "staging", "deliver_shop", "manual__1")
    assert a.startswith("shop-staging-") and len(a) == len("shop-staging-") + 8
    assert a != release_id("shop", "production", "deliver_shop", "manual__1")


def test_the_release_dag_has_a_group_per_service_per_environment() -> None:
    from docker_delivery.templates import delivery_pipeline

    dag = delivery_pipeline(SHOP / "release.yaml")
    assert "staging.api" in dag.task_group_dict and "staging.web" in dag.task_group_dict
    assert set(dag.params) >= {"revision", "image_api", "image_web"}
    record = dag.task_dict["staging.record"]
    assert record.trigger_rule == "all_done"
    back = dag.task_dict["staging.roll_back_web"]
    assert back.if_serving == "{{ ti.xcom_pull(task_ids='web.release') }}"


DIGESTS = {n: f"sha256:{n * 64}" for n in "abcdef"}


def record(service: str, digest: str, previous: str | None, outcome: str = "success") -> Any:
    t = datetime(2026, 12, 1, tzinfo=UTC)
    return DeploymentRecord(
        service=service, environment="staging", digest=DIGESTS[digest],
        previous_digest=DIGESTS[previous] if previous else None,
        image=f"r/{service}@{DIGESTS[digest]}", deployment_type="blue_green", outcome=outcome,
        started_at=t, finished_at=t, revision=None, committed_at=None, dag_id="d",
        run_id="r", approved_by=None, approval=None, release_id="shop-staging-1",
    )  # fmt: skip


def test_a_release_goes_back_last_service_first_or_not_at_all() -> None:
    records = [record("api", "b", "a"), record("web", "d", "c")]
    live = {"api": DIGESTS["b"], "web": DIGESTS["d"]}
    done: list[str] = []
    out = roll_back_release(
        "shop-staging-1", records, live_digest=lambda r: live[r.service],
        roll_back_one=lambda r: done.append(r.service), log=lambda _: None,
    )  # fmt: skip
    assert done == ["web", "api"] and [s["action"] for s in out] == ["roll_back"] * 2
    live["api"] = DIGESTS["e"]  # a later release replaced the API: nothing moves
    done.clear()
    with pytest.raises(RollbackImpossible, match=r"api/staging serves eeeeeeeeeeee, not this"):
        roll_back_release(
            "shop-staging-1", records, live_digest=lambda r: live[r.service],
            roll_back_one=lambda r: done.append(r.service), log=lambda _: None,
        )  # fmt: skip
    assert done == []

    def past_contract(r: DeploymentRecord) -> None:
        if r.service == "api":
            raise RuntimeError("0003_drop_name is a contract migration")

    live["api"] = DIGESTS["b"]
    with pytest.raises(RollbackImpossible, match="api: 0003_drop_name is a contract migration"):
        roll_back_release(
            "shop-staging-1", records, live_digest=lambda r: live[r.service],
            roll_back_one=lambda r: done.append(r.service), check_contract=past_contract,
            log=lambda _: None,
        )  # fmt: skip
    assert done == []
    failed = [record("api", "b", "a", "rolled_back"), record("web", "d", None, "rolled_back")]
    out = roll_back_release(
        "shop-staging-1", failed, live_digest=lambda r: None, roll_back_one=done.append,
        log=lambda _: None,
    )  # fmt: skip
    assert [s["action"] for s in out] == ["nothing", "nothing"] and done == []


def test_a_release_to_two_environments_gates_the_second_and_requires_the_first() -> None:
    data = shop(environments=["staging", "production"], mode="continuous_delivery",
                approve=["production"])  # fmt: skip
    for port, entry in zip((18391, 18393), data["release"]["services"].values(), strict=True):
        spec = entry["spec"]
        spec["environments"]["production"] = {
            **spec["environments"]["staging"],
            "router": {"port": port, "preview_port": port + 1},
        }
        spec["pipeline"]["stages"].append(
            {**spec["pipeline"]["stages"][0], "environment": "production"}
        )
    tasks = {t.task_id: t for t in plan_release(load_release(data, environ={}))}
    assert tasks["approve_production"].upstream == ("staging.record",)
    assert tasks["production.api.require_previous"].upstream == ("approve_production",)
    assert tasks["production.web.require_previous"].upstream == ("production.api.smoke_version",)
    assert tasks["production.record"].extra["roll_backs"] == {
        "web": "production.roll_back_web", "api": "production.roll_back_api",
    }  # fmt: skip
