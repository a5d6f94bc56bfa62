"""A release of two services (an API, and a web front that calls it) run in Airflow against the
bed, under load on both routers: delivered as one, verified together (the web reaches the API),
undone together.

Runs of the release DAG, the CLI and RollbackReleaseOperator:

1. v1 of both: the first release (the module's fixture);
2. v2 of both: passes; promoted, the web's old colour retired;
3. v3 of the API and a web release that never passes its health check: the API was already
   replaced (minimum in-service) when the web's new colour failed; the release rolls the API
   back to v2 (the web never took traffic), and its two ledger records share one release id,
   both rolled back;
4. v2 of the API again (unchanged) and the bad web: nothing of the API to undo;
5. ``docker-delivery rollback --release <the id of run 2>``: both back to v1, the web first,
   though the API's running instances name v3 as their previous release (the ledger says v1);
6. v2 of both again, taken back by RollbackReleaseOperator; then each release's rollback once
   more: nothing to do.
"""

from __future__ import annotations

import io
import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kit.images import demo_variant
from kit.loadgen import LoadGenerator, free_port
from kit.pipeline import register, release_service, states

from docker_delivery.images.ref import ImageRef
from docker_delivery.images.registry import RegistryClient
from docker_delivery.ledger import Ledger

pytestmark = pytest.mark.timeout(1500)


@pytest.fixture(scope="module")
def unhealthy_web(bed: Any, docker_client: Any, demo_images: dict[str, str]) -> str:
    """A web release that never passes its health check."""
    return demo_variant(bed, docker_client, demo_images["v3"], "rel-bad", "ENV FAIL_HEALTH=1")


@pytest.fixture(scope="module")
def shop(
    bed: Any,
    airflow_db: None,
    docker_client: Any,
    tmp_path_factory: Any,
    demo_images: dict[str, str],
) -> Iterator[Any]:
    """The release of two services, its first release (v1 of both) delivered: each test starts
    from something serving."""
    from docker_delivery.templates import delivery_pipeline
    from docker_delivery.templates.release_spec import load_release

    tag = uuid.uuid4().hex[:5]
    env, api, web = f"rel{tag}", f"rel{tag}-api", f"rel{tag}-web"
    folder = tmp_path_factory.mktemp("release")
    ledger = folder / "ledger.db"
    ports = {"api": free_port(), "web": free_port(), "preview": free_port()}
    data = {
        "release": {
            "name": f"shop{tag}",
            "mode": "continuous_deployment",
            "environments": [env],
            "ledger": str(ledger),
            "services": {
                "api": {
                    "spec": release_service(
                        bed,
                        api,
                        env,
                        {"type": "min_in_service", "min_in_service": 1},
                        router={"port": ports["api"]},
                    )
                },
                "web": {
                    "spec": release_service(
                        bed,
                        web,
                        env,
                        {"type": "blue_green", "preview_replicas": 1, "scale_down_delay": 0},
                        router={"port": ports["web"], "preview_port": ports["preview"]},
                        env={"UPSTREAM_URL": f"http://dd-router-{api}-{env}:8080"},
                        networks=[f"dd-{api}-{env}"],
                    ),
                    "depends_on": ["api"],
                },
            },
            "checks": [
                {
                    "name": "web_reaches_api",
                    "http": {"service": "web", "path": "/upstream", "contains": '"status": 200'},
                }
            ],
        }
    }
    rs = load_release(data)
    (folder / "release.yaml").write_text(_yaml(rs, data, folder))
    dag = delivery_pipeline(data)
    register(dag)
    v1 = demo_images["v1"]
    first = dag.test(run_conf={"image_api": v1, "image_web": v1, "revision": ""})
    assert str(first.state) == "success", states(dag.dag_id, first.run_id)
    yield {
        "dag": dag, "env": env, "api": api, "web": web, "ledger": Ledger(ledger),
        "ports": ports, "release_file": folder / "release.yaml", "data": data,
    }  # fmt: skip
    for container in docker_client.containers.list(
        ignore_removed=True, all=True, filters={"name": f"rel{tag}"}
    ):
        container.remove(force=True)
    for network in docker_client.networks.list(names=[f"dd-rel{tag}"]):
        network.remove()


def _yaml(rs: Any, data: dict[str, Any], folder: Path) -> str:
    """The release as files (what the CLI is given): the services' specs beside it."""
    import yaml

    section = json.loads(json.dumps(data["release"]))
    for key, entry in section["services"].items():
        (folder / f"{key}.yaml").write_text(yaml.safe_dump(entry["spec"], sort_keys=False))
        entry["spec"] = f"{key}.yaml"
    return str(yaml.safe_dump({"release": section}, sort_keys=False))


def serving(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as answer:
        return str(json.loads(answer.read())["digest"])


def test_a_release_goes_as_one_and_comes_back_as_one(
    bed: Any, shop: dict[str, Any], demo_images: dict[str, str], unhealthy_web: str
) -> None:
    from docker_delivery.cli import main

    dag, ports, ledger = shop["dag"], shop["ports"], shop["ledger"]
    digest = {v: str(ImageRef.parse(demo_images[v]).digest) for v in ("v1", "v2", "v3")}

    def deliver(api: str, web: str) -> tuple[str, str, dict[str, tuple[str, int]]]:
        run = dag.test(run_conf={"image_api": api, "image_web": web, "revision": ""})
        return str(run.state), str(run.run_id), states(dag.dag_id, run.run_id)

    state, second, got = deliver(demo_images["v2"], demo_images["v2"])
    assert state == "success", got
    assert (serving(ports["api"]), serving(ports["web"])) == (digest["v2"], digest["v2"])
    good = ledger.records(run_id=second)
    assert {r.outcome for r in good} == {"success"} and len({r.release_id for r in good}) == 1
    good_id = str(good[0].release_id)
    with RegistryClient(bed.registry) as registry:  # promoted once the release passed
        tag = ImageRef.parse(demo_images["v1"]).without_tag().with_tag(shop["env"])
        assert registry.resolve(tag) == digest["v2"]

    urls = [f"http://127.0.0.1:{ports['api']}/", f"http://127.0.0.1:{ports['web']}/"]
    with LoadGenerator(urls, rate=40, max_duration=600, cookies=False) as load:
        state, third, got = deliver(demo_images["v3"], unhealthy_web)
        load.mark("after the failed release")
        api_after, web_after = serving(ports["api"]), serving(ports["web"])
    report = load.report
    assert report is not None
    print(f"failed release under load: {report.summary()}")
    assert state == "failed", got
    assert got[f"{shop['env']}.api.deploy"][0] == "success"  # the API had moved
    assert got[f"{shop['env']}.web.deploy"][0] == "failed"
    assert got[f"{shop['env']}.roll_back_api"][0] == "success"
    assert (api_after, web_after) == (digest["v2"], digest["v2"]), "both on their previous"
    assert report.total > 500 and report.failed == 0, report.summary()
    records = ledger.records(run_id=third)
    assert sorted((r.service, r.outcome) for r in records) == [
        (shop["api"], "rolled_back"), (shop["web"], "rolled_back"),
    ]  # fmt: skip
    assert len({r.release_id for r in records}) == 1
    bad_id = str(records[0].release_id)
    with RegistryClient(bed.registry) as registry:  # never promoted: it did not pass
        assert registry.resolve(tag) == digest["v2"]
    assert [r.service for r in ledger.release(bad_id)] == [shop["api"], shop["web"]]

    # A release that leaves the API as it is (v2 again) and fails at the web: the API's
    # rollback finds nothing of it to undo (its running v2 names v3 as its previous release,
    # since the rollback above: undoing it by the labels would go forward to v3).
    state, _, got = deliver(demo_images["v2"], unhealthy_web)
    assert state == "failed", got
    assert got[f"{shop['env']}.roll_back_api"][0] == "success"
    assert (serving(ports["api"]), serving(ports["web"])) == (digest["v2"], digest["v2"])

    # The release that passed, by its id: the web, then the API, back to v1.
    code = main(["history", "--ledger", ledger.where, "--release", good_id], out=io.StringIO())
    assert code == 0
    out = io.StringIO()
    with LoadGenerator(urls, rate=40, max_duration=600, cookies=False) as load:
        code = main(
            ["rollback", "--release", good_id, "--spec", str(shop["release_file"]),
             "--ledger", ledger.where],
            out=out,
        )  # fmt: skip
    print(out.getvalue())
    print(f"release rollback under load: {load.report.summary() if load.report else '?'}")
    assert code == 0, out.getvalue()
    assert (serving(ports["api"]), serving(ports["web"])) == (digest["v1"], digest["v1"])
    assert load.report is not None and load.report.failed == 0, load.report.summary()
    tag = ImageRef.parse(demo_images["v1"]).without_tag().with_tag(shop["env"])
    with RegistryClient(bed.registry) as registry:  # the tag names what serves again
        assert registry.resolve(tag) == digest["v1"]
    back = ledger.release(f"{good_id}.rollback")
    assert [(r.service, r.digest) for r in back] == [
        (shop["web"], digest["v1"]), (shop["api"], digest["v1"]),
    ]  # fmt: skip

    # v2 once more, then rolled back by RollbackReleaseOperator in a DAG of its own.
    state, fifth, got = deliver(demo_images["v2"], demo_images["v2"])
    assert state == "success", got
    again = str(ledger.records(run_id=fifth)[0].release_id)
    undo = undo_dag(shop, ledger)
    run = undo.test(run_conf={"release_id": again})
    assert str(run.state) == "success"
    assert (serving(ports["api"]), serving(ports["web"])) == (digest["v1"], digest["v1"])
    assert [r.service for r in ledger.release(f"{again}.rollback")] == [shop["web"], shop["api"]]

    # Each release once more: nothing of them serves now; nothing to do, nothing changes.
    for release in (good_id, bad_id):
        out = io.StringIO()
        code = main(
            ["rollback", "--release", release, "--spec", str(shop["release_file"]),
             "--ledger", ledger.where],
            out=out,
        )  # fmt: skip
        assert code == 0 and "nothing to do" in out.getvalue(), out.getvalue()
    assert (serving(ports["api"]), serving(ports["web"])) == (digest["v1"], digest["v1"])


def undo_dag(shop: dict[str, Any], ledger: Ledger) -> Any:
    """A DAG that takes the release its run's param names back (RollbackReleaseOperator)."""
    import pendulum
    from airflow.sdk import DAG, Param

    from docker_delivery.operators.release import RollbackReleaseOperator

    with DAG(
        f"{shop['dag'].dag_id}_undo",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={"release_id": Param("", type="string")},
    ) as dag:
        RollbackReleaseOperator(
            task_id="roll_back_release",
            release=shop["release_file"],
            release_id="{{ params.release_id }}",
            ledger=ledger.where,
        )
    register(dag)
    return dag


def test_a_rejected_release_changes_nothing_and_each_service_records_who_rejected_it(
    shop: dict[str, Any], demo_images: dict[str, str]
) -> None:
    """The same release in continuous delivery: a human rejects it before the environment;
    nothing moves, and every service has its rejected record under the release's one id."""
    import copy
    import threading

    from kit.approval import APPROVER, answer_approval

    from docker_delivery.templates import delivery_pipeline

    env, ports, ledger = shop["env"], shop["ports"], shop["ledger"]
    data = copy.deepcopy(shop["data"])
    dag_id = f"{shop['dag'].dag_id}_gated"
    data["release"].update(mode="continuous_delivery", approve=[env], dag_id=dag_id)
    dag = delivery_pipeline(data)
    register(dag)
    before = (serving(ports["api"]), serving(ports["web"]))
    marker = uuid.uuid4().hex
    stop, answered = threading.Event(), []
    answering = threading.Thread(
        target=answer_approval,
        args=(marker, stop, answered),
        kwargs={"dag_id": dag_id, "gate": f"approve_{env}", "choice": "Reject"},
    )
    answering.start()
    try:
        run = dag.test(
            run_conf={"image_api": demo_images["v3"], "image_web": demo_images["v3"],
                      "revision": marker}
        )  # fmt: skip
    finally:
        stop.set()
        answering.join(30)
    assert answered == [run.run_id], "the approval never asked"
    got = states(dag_id, run.run_id)
    assert got[f"{env}.api.deploy"][0] == "skipped" and got[f"{env}.record"][0] == "skipped"
    assert (serving(ports["api"]), serving(ports["web"])) == before
    records = ledger.records(run_id=run.run_id)
    assert sorted((r.service, r.outcome, r.approved_by) for r in records) == [
        (shop["api"], "rejected", APPROVER["name"]), (shop["web"], "rejected", APPROVER["name"]),
    ]  # fmt: skip
    assert len({r.release_id for r in records}) == 1 and records[0].release_id


def test_a_release_that_never_reached_the_environment_rolls_nothing_back(
    shop: dict[str, Any], demo_images: dict[str, str]
) -> None:
    """The API's image given by a tag (refused: only a digest is redeployed): nothing reaches
    the environment; its rollback tasks are skipped and no record is written."""
    dag, env, ports, ledger = shop["dag"], shop["env"], shop["ports"], shop["ledger"]
    before = (serving(ports["api"]), serving(ports["web"]))
    tagged = str(ImageRef.parse(demo_images["v3"]).with_tag("v3"))
    run = dag.test(run_conf={"image_api": tagged, "image_web": demo_images["v3"], "revision": ""})
    got = states(dag.dag_id, run.run_id)
    assert str(run.state) == "failed"
    assert got["api.what_to_deliver"][0] == "failed", got
    assert got[f"{env}.api.deploy"][0] == "upstream_failed"
    assert got[f"{env}.release_failed"][0] == "success"
    assert got[f"{env}.roll_back_api"][0] == got[f"{env}.roll_back_web"][0] == "skipped"
    assert got[f"{env}.record"][0] == "failed"
    assert ledger.records(run_id=run.run_id) == []
    assert (serving(ports["api"]), serving(ports["web"])) == before
