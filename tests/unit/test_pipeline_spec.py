"""The pipeline spec, its plan, and the DAG `delivery_pipeline` makes of it (no Docker, no DB)."""

from __future__ import annotations

import copy
import http.server
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from docker_delivery.spec import SpecInvalid
from docker_delivery.templates.pipeline_spec import PipelineSpec, load_pipeline
from docker_delivery.templates.plan import describe_plan, plan_tasks

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "dags" / "pipelines"
APP = ROOT / "dags" / "demo_app"
DIGEST = "sha256:" + "ab" * 32


def two_envs() -> dict[str, Any]:
    data = yaml.safe_load((PIPELINES / "two_envs.yaml").read_text())
    data["pipeline"]["build"]["context"] = str(APP)
    return data


def spec_of(data: dict[str, Any], **environ: str) -> PipelineSpec:
    return load_pipeline(data, environ=environ)


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecInvalid) as caught:
        spec_of(data)
    return caught.value.problems


# -- the examples ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(PIPELINES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_spec_is_valid_and_has_a_dag_file(path: Path) -> None:
    spec = load_pipeline(path)
    assert spec.pipeline.build.context == str(APP)  # relative to the spec file
    dag_files = [p for p in (ROOT / "dags").glob("*.py") if path.name in p.read_text()]
    assert len(dag_files) == 1, f"one DAG file calls delivery_pipeline on {path.name}"
    assert len(dag_files[0].read_text().splitlines()) <= 10  # a spec and one call


def test_examples_cover_every_deployment_type_and_avoid_the_demo_port() -> None:
    demo = load_pipeline(PIPELINES / "delivery_demo.yaml")
    assert demo.environments["staging"].router.port == 18080  # make demo's
    specs = [load_pipeline(p) for p in PIPELINES.glob("*.yaml") if p.stem != "delivery_demo"]
    types = {s.deploy.type for spec in specs for s in spec.pipeline.stages}
    assert types == {"min_in_service", "rolling", "blue_green", "ab"}
    ports = [
        port
        for spec in specs
        for env in spec.environments.values()
        if env.target != "ecs"  # its load balancer's or DNS name's ports
        for port in (env.router.port, env.router.preview_port)
        if port is not None
    ]
    assert 18080 not in ports  # make demo's
    assert len(ports) == len(set(ports))  # examples can run side by side


def test_the_two_environment_plan_builds_once_and_gates_production() -> None:
    spec = spec_of(two_envs())
    tasks = {t.task_id: t for t in plan_tasks(spec)}
    order = list(tasks)
    assert order[:6] == [
        "what_to_deliver",
        "build",
        "test_unit",
        "test_smoke",
        "redeploy",
        "release",
    ]
    # the tests run in parallel, on the build's digest
    assert tasks["test_unit"].upstream == tasks["test_smoke"].upstream == ("build",)
    assert set(tasks["release"].upstream) == {"test_unit", "test_smoke", "redeploy"}
    assert tasks["release"].trigger_rule == "none_failed_min_one_success"
    staging = [t for t in order if t.startswith("staging.")]
    production = [t for t in order if t.startswith("production.")]
    assert staging == [
        "staging.apply_infra",
        "staging.deploy",
        "staging.verify_health",
        "staging.smoke_version",
        "staging.promote",
        "staging.record",
    ]
    assert production == [
        "production.require_previous",
        "production.deploy",
        "production.verify_preview",
        "production.switch",
        "production.verify_health",
        "production.smoke_version",
        "production.promote",
        "production.retire",
        "production.record",
    ]
    # the ledger record ends each stage, whatever happened in it, and gates the next one
    assert tasks["staging.record"].trigger_rule == "all_done"
    assert tasks["staging.record"].upstream == ("staging.promote",)
    assert tasks["approve_production"].upstream == ("staging.record",)
    # the environment tag moves once the stage's checks have passed; the next stage checks it
    # before it changes anything
    assert tasks["staging.promote"].upstream == ("staging.smoke_version",)
    assert tasks["production.require_previous"].upstream == ("approve_production",)
    assert tasks["production.require_previous"].extra["tag"] == "staging"
    assert tasks["production.deploy"].upstream == ("production.require_previous",)


def test_continuous_deployment_has_no_gate() -> None:
    data = two_envs()
    data["pipeline"]["mode"] = "continuous_deployment"
    data["pipeline"]["stages"][1]["approval"] = False
    ids = [t.task_id for t in plan_tasks(spec_of(data))]
    assert not [i for i in ids if i.startswith("approve_")]


def test_migrations_expand_before_and_contract_after_the_deploy() -> None:
    data = two_envs()
    data["pipeline"]["migrations"] = {"database_conn_id": "demo_db"}
    data["pipeline"]["stages"][1]["migrate"] = False
    ids = [t.task_id for t in plan_tasks(spec_of(data))]
    staging = [i for i in ids if i.startswith("staging.")]
    assert staging.index("staging.migrate_expand") < staging.index("staging.deploy")
    assert staging[-2:] == ["staging.migrate_contract", "staging.record"]
    assert not [i for i in ids if i.startswith("production.migrate")]


def test_the_plan_text_lists_every_task_per_environment() -> None:
    text = describe_plan(spec_of(two_envs()))
    assert text.splitlines()[0].startswith("DAG deliver_two_envs: continuous delivery")
    assert "production (after an approval): blue/green on swarm" in text
    assert text.index("staging.deploy") < text.index("approve_production")
    assert "[retries 3]" in text.split("staging.promote")[1].splitlines()[0]
    assert "[no retry]" in text.split("staging.deploy")[1].splitlines()[0]


def test_policies_default_and_overrides() -> None:
    data = two_envs()
    data["pipeline"]["tasks"] = {"promote": {"retries": 5}, "verify": {"timeout": 900}}
    spec = spec_of(data)
    assert spec.policy("promote").retries == 5
    assert spec.policy("promote").retry_delay == 10  # the default kept
    assert spec.policy("verify").timeout == 900
    assert spec.policy("deploy").retries == 0
    assert spec.policy("build").retries == 2


def test_environment_references_are_filled_from_the_environment() -> None:
    data = two_envs()
    data["pipeline"]["build"]["build_args"] = {"A": "${DD_X}", "B": "${DD_NOPE:-fallback}"}
    data["pipeline"]["description"] = "costs $$5"
    spec = spec_of(data, DD_X="from-env")
    assert spec.pipeline.build.build_args == {"A": "from-env", "B": "fallback"}
    assert spec.pipeline.description == "costs $5"
    assert spec.image == "127.0.0.1:5000/docker-delivery/demo-two-envs"


def test_a_default_stands_for_an_empty_name_as_in_a_shell_and_empty_connections_are_none() -> None:
    """A compose file passes ``NAME: ${NAME:-}`` to the services: set, but empty."""
    data = two_envs()
    data["pipeline"]["build"]["build_args"] = {"A": "${DD_EMPTY:-fallback}", "B": "${DD_EMPTY}"}
    data["pipeline"]["docker_conn_id"] = "${DD_EMPTY:-}"
    data["pipeline"]["engine"] = "${DD_EMPTY}"
    spec = spec_of(data, DD_EMPTY="")
    assert spec.pipeline.build.build_args == {"A": "fallback", "B": ""}
    assert spec.pipeline.docker_conn_id is None and spec.pipeline.engine is None


def test_a_spec_from_text_and_the_model_itself() -> None:
    text = (PIPELINES / "two_envs.yaml").read_text().replace("../demo_app", str(APP))
    spec = load_pipeline(text)
    assert load_pipeline(spec) is spec
    assert spec.service_spec().environment("production").router.preview_port == 18183
    assert spec.service_dict()["environments"]["staging"]["target"] == "swarm"


def test_problems_are_all_listed_at_once() -> None:
    data = two_envs()
    data["environments"]["production"]["replicas"] = -1
    data["pipeline"]["stages"][0]["deploy"]["type"] = "rolling-update"
    data["pipeline"]["tests"][0]["nam"] = "x"
    found = problems_of(data)
    assert len(found) == 3, found
    assert all(": " in p for p in found)


# -- the DAG ---------------------------------------------------------------------------------


def mis_spec(**pipeline: Any) -> dict[str, Any]:
    data = yaml.safe_load((PIPELINES / "min_in_service.yaml").read_text())
    data["pipeline"]["build"]["context"] = str(APP)
    data["pipeline"].update(pipeline)
    return data


def test_delivery_pipeline_makes_the_dag_of_the_plan() -> None:
    from docker_delivery.templates import delivery_pipeline

    dag = delivery_pipeline(mis_spec())
    assert dag.dag_id == "deliver_min_in_service"
    assert dag.fileloc == __file__  # the caller's file, as for a DAG written by hand
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert set(dag.params) == {"revision", "image"}
    assert [t.task_id for t in dag.tasks] == [t.task_id for t in plan_tasks(spec_of(mis_spec()))]
    ops = {t.task_id: t for t in dag.tasks}
    kinds = {i: type(op).__name__ for i, op in ops.items()}
    assert kinds == {
        "what_to_deliver": "BranchPythonOperator",
        "build": "BuildImageOperator",
        "test_unit": "TestImageOperator",
        "redeploy": "PythonOperator",
        "release": "PythonOperator",
        "staging.apply_infra": "ApplyInfraOperator",
        "staging.deploy": "MinimumInServiceDeployOperator",
        "staging.verify_health": "ServiceHealthySensor",
        "staging.smoke_version": "PythonOperator",
        "staging.promote": "PromoteImageOperator",
        "staging.record": "RecordDeliveryOperator",
    }
    assert ops["staging.record"].trigger_rule == "all_done" and ops["staging.record"].retries == 0
    assert ops["staging.deploy"].retries == 0
    assert ops["staging.promote"].retries == 3
    assert ops["staging.promote"].retry_exponential_backoff
    assert ops["build"].retries == 2
    assert ops["build"].execution_timeout == timedelta(hours=1)
    assert ops["test_unit"].retries == 0
    assert ops["test_unit"].execution_timeout == timedelta(seconds=1800 + 300)
    assert ops["release"].trigger_rule == "none_failed_min_one_success"
    deploy: Any = ops["staging.deploy"]
    assert deploy.image == "{{ ti.xcom_pull(task_ids='release') }}"
    spec = deploy.environment_spec()
    assert deploy.router_settings(spec).port == 18281 and deploy.settings.min_in_service == 2
    assert deploy.settings.replicas == 4  # the environment's, in the settings the task runs
    build: Any = ops["build"]
    assert build.context == str(APP)
    assert build.revision == "{{ ti.xcom_pull(task_ids='what_to_deliver', key='revision') }}"
    test: Any = ops["test_unit"]
    assert test.image == "{{ ti.xcom_pull(task_ids='build') }}"  # tests run before release
    assert dag.schedule == "0 2 * * *"


def test_an_asset_trigger_schedules_on_the_promotion_event() -> None:
    from docker_delivery.operators.promote import image_asset
    from docker_delivery.templates import delivery_pipeline

    data = mis_spec(trigger={"asset": {"environment": "qa"}})
    dag = delivery_pipeline(data)
    expected = image_asset("127.0.0.1:5000/docker-delivery/demo-mis", "qa")
    assert dag.schedule == [expected]
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"


def test_a_gated_stage_gets_the_approval_operator() -> None:
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    from docker_delivery.templates import delivery_pipeline

    data = mis_spec(mode="continuous_delivery", approval={"timeout": 3600})
    data["pipeline"]["stages"][0]["approval"] = True
    dag = delivery_pipeline(data)
    gate: Any = dag.get_task("approve_staging")
    assert isinstance(gate, ApprovalOperator)
    assert gate.response_timeout == timedelta(hours=1)
    assert gate.execution_timeout is None
    assert gate.ignore_downstream_trigger_rules is True
    assert dag.get_task("staging.apply_infra").upstream_task_ids == {"approve_staging"}


def test_a_dag_from_an_invalid_spec_is_refused_with_every_problem() -> None:
    from docker_delivery.templates import delivery_pipeline

    data = mis_spec()
    data["environments"]["staging"]["replicas"] = "4"
    with pytest.raises(SpecInvalid, match=r"environments\.staging\.replicas: must be an integer"):
        delivery_pipeline(data)


# -- what a run delivers ---------------------------------------------------------------------


class FakeTI:
    task_id = "what_to_deliver"

    def __init__(self, xcoms: dict[tuple[str, str | None], Any] | None = None) -> None:
        self.pushed: dict[str, Any] = {}
        self.xcoms = xcoms or {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, task_ids: str, key: str | None = None) -> Any:
        return self.xcoms.get((task_ids, key))


def test_a_run_given_an_image_redeploys_it() -> None:
    from docker_delivery.templates.pipeline import what_to_deliver

    ti = FakeTI()
    image = f"127.0.0.1:5000/shop/web@{DIGEST}"
    assert what_to_deliver(str(APP), params={"image": image, "revision": ""}, ti=ti) == "redeploy"
    assert ti.pushed == {"image": image}


def test_a_run_given_a_tag_is_refused() -> None:
    from docker_delivery.errors import InvalidReference
    from docker_delivery.templates.pipeline import what_to_deliver

    with pytest.raises(InvalidReference):
        what_to_deliver(str(APP), params={"image": "127.0.0.1:5000/shop/web:v1"}, ti=FakeTI())


def test_a_run_triggered_by_a_promotion_redeploys_its_digest() -> None:
    from docker_delivery.templates.pipeline import what_to_deliver

    old = SimpleNamespace(extra={"image": f"r/x:staging@sha256:{'01' * 32}"}, timestamp=1)
    new = SimpleNamespace(
        extra={"image": f"r/x:staging@{DIGEST}"}, timestamp=2, asset=SimpleNamespace(name="r/x")
    )
    ti = FakeTI()
    events = {"asset": [old, new]}
    result = what_to_deliver(str(APP), params={}, ti=ti, triggering_asset_events=events)
    assert result == "redeploy"
    assert ti.pushed["image"].endswith(DIGEST)


def test_a_run_builds_the_revision_given_or_the_sources_own(tmp_path: Path) -> None:
    from docker_delivery.templates.pipeline import what_to_deliver
    from docker_delivery.templates.source import content_hash

    ti = FakeTI()
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert what_to_deliver(str(tmp_path), params={"revision": sha}, ti=ti) == "build"
    assert ti.pushed == {"revision": sha, "committed_at": None}  # not a commit of tmp_path
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    ti = FakeTI()
    assert what_to_deliver(str(tmp_path), params={}, ti=ti) == "build"
    assert ti.pushed["revision"] == content_hash(tmp_path)
    ti = FakeTI()
    what_to_deliver(str(tmp_path), "nightly-20260101", params={}, ti=ti)  # build.revision, rendered
    assert ti.pushed == {"revision": "nightly-20260101", "committed_at": None}


def test_a_commit_gives_its_time_where_lead_time_starts(tmp_path: Path) -> None:
    import datetime as dt
    import subprocess

    from docker_delivery.templates.pipeline import what_to_deliver

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    when = "2026-11-20T10:00:00+00:00"
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    env = {"GIT_COMMITTER_DATE": when, "GIT_AUTHOR_DATE": when, "PATH": "/usr/bin:/bin"}
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True, env=env)
    ti = FakeTI()
    assert what_to_deliver(str(tmp_path), params={}, ti=ti) == "build"
    assert len(ti.pushed["revision"]) == 40  # the clean work tree's HEAD
    committed = dt.datetime.fromisoformat(ti.pushed["committed_at"])
    assert committed == dt.datetime.fromisoformat(when)


def test_a_ref_outside_a_git_work_tree_is_refused(tmp_path: Path) -> None:
    from docker_delivery.templates.source import RevisionInvalid, resolve_revision

    with pytest.raises(RevisionInvalid, match="give the commit SHA"):
        resolve_revision("main", tmp_path)
    with pytest.raises(RevisionInvalid, match="neither"):
        resolve_revision("not a ref", tmp_path)


def test_the_content_hash_follows_the_files(tmp_path: Path) -> None:
    from docker_delivery.templates.source import content_hash

    (tmp_path / "a.txt").write_text("one")
    first = content_hash(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert content_hash(tmp_path) == first
    (tmp_path / "a.txt").write_text("two")
    assert content_hash(tmp_path) != first


def test_release_is_the_build_or_the_image_to_redeploy() -> None:
    from docker_delivery.templates.pipeline import release

    built = f"r/x:abc@{DIGEST}"
    assert release(ti=FakeTI({("build", None): built})) == built
    assert release(ti=FakeTI({("what_to_deliver", "image"): built})) == built
    with pytest.raises(ValueError, match="nothing to deliver"):
        release(ti=FakeTI())


# -- the HTTP smoke test ---------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[str]:
    calls = {"n": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            calls["n"] += self.path == "/flaky"
            if self.path == "/flaky" and calls["n"] < 3:
                self.send_response(503)
                self.end_headers()
                return
            body = f'{{"digest": "{DIGEST}"}}'.encode()
            self.send_response(200 if self.path != "/missing" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_check_passes_on_the_status_and_content(server: str) -> None:
    from docker_delivery.templates.pipeline import http_check

    assert http_check(server + "/version", contains=DIGEST)["attempts"] == 1
    assert http_check(server + "/flaky", attempts=3, interval=0)["attempts"] == 3
    assert http_check(server + "/missing", status=404)["status"] == 404


def test_http_check_fails_saying_what_it_got(server: str) -> None:
    from docker_delivery.templates.pipeline import http_check

    with pytest.raises(RuntimeError, match="answered 404, not 200 after 2 tries"):
        http_check(server + "/missing", attempts=2, interval=0)
    with pytest.raises(RuntimeError, match="without 'sha256:ff'"):
        http_check(server + "/version", contains="sha256:ff", attempts=1)
    with pytest.raises(RuntimeError, match="no answer"):
        http_check("http://127.0.0.1:1/", attempts=1, timeout=0.5)


def test_specs_are_data_a_deep_copy_validates_the_same() -> None:
    data = two_envs()
    assert spec_of(copy.deepcopy(data)) == spec_of(data)


# -- the approval gate, in a DAG run (Airflow's metadata DB; no Docker: a redeploy is rejected) --


def respond(
    dag_id: str,
    task_id: str,
    image: str,
    option: str,
    user: dict[str, str],
    stop: Any,
    errors: list[BaseException],
    deadline_s: float = 120,
) -> None:
    """Answer the gate of the run delivering ``image`` (tests may run side by side on one
    database) when it asks, as Airflow's REST endpoint for HITL responses does. Past the
    deadline the gate is failed instead, so that ``dag.test()`` ends (Airflow's own alarms
    take over pytest-timeout's in a DAG run)."""
    import time

    from airflow._shared.timezones import timezone
    from airflow.models.dagrun import DagRun
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    deadline = time.monotonic() + deadline_s
    while not stop.is_set():
        try:
            with create_session() as session:
                waiting = (
                    session.query(TaskInstance)
                    .join(
                        DagRun,
                        (DagRun.dag_id == TaskInstance.dag_id)
                        & (DagRun.run_id == TaskInstance.run_id),
                    )
                    .filter(
                        TaskInstance.dag_id == dag_id,
                        TaskInstance.task_id == task_id,
                        TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
                    )
                    .with_entities(TaskInstance, DagRun.conf)
                    .all()
                )
                ours = [ti for ti, conf in waiting if (conf or {}).get("image") == image]
                if ours and time.monotonic() > deadline:
                    ours[0].state = TaskInstanceState.FAILED
                    errors.append(TimeoutError("the gate was not answered in time"))
                    return
                detail = ours and session.query(HITLDetail).filter_by(ti_id=ours[0].id).one()
                if detail and detail.responded_at is None:
                    detail.responded_by = dict(user)
                    detail.responded_at = timezone.utcnow()
                    detail.chosen_options = [option]
                    detail.params_input = {}
                    session.add(detail)
                    payload = TriggerEvent(detail.as_resume_event_payload())
                    handle_event_submit(payload, task_instance=ours[0], session=session)
                    return
        except Exception as exc:  # e.g. the database is busy: try again
            errors.append(exc)
        stop.wait(0.5)


@pytest.mark.timeout(300)
def test_a_rejected_approval_stops_the_delivery_and_says_who(
    airflow_db: None, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    from docker_delivery.templates import delivery_pipeline

    data = mis_spec(dag_id="dd_test_pipeline_reject", mode="continuous_delivery")
    data["pipeline"]["stages"][0]["approval"] = True
    data["pipeline"]["ledger"] = str(tmp_path / "ledger.db")
    dag = delivery_pipeline(data)
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    stop, errors = threading.Event(), []
    user = {"id": "u-42", "name": "release manager"}
    image = f"127.0.0.1:5000/docker-delivery/demo-mis@sha256:{uuid.uuid4().hex * 2}"
    answer = threading.Thread(
        target=respond,
        args=(dag.dag_id, "approve_staging", image, "Reject", user, stop, errors),
    )
    answer.start()
    try:
        run = dag.test(run_conf={"image": image})  # a redeploy (of this run's own digest)
    finally:
        stop.set()
        answer.join(10)
    assert not [e for e in errors if isinstance(e, TimeoutError)], errors
    got = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert got["approve_staging"] == "success"
    assert got["release"] == "success" and got["build"] == "skipped"
    stage = {k: v for k, v in got.items() if k.startswith("staging.")}
    assert stage and set(stage.values()) == {"skipped"}, got  # nothing promoted or deployed
    log = capfd.readouterr().out
    assert "rejected by release manager (id u-42)" in log  # the task's log says who decided
    from docker_delivery.ledger import Ledger

    [record] = Ledger(tmp_path / "ledger.db").records()  # and the ledger
    assert (record.outcome, record.approval, record.approved_by) == (
        "rejected",
        "rejected",
        "release manager",
    )
    assert record.image == image and record.run_id == run.run_id
    assert "the delivery stops here" in log


def test_a_deploy_operator_takes_its_settings_model_or_its_fields() -> None:
    """One settings model per deployment type: the operator takes it as it is, or its fields
    as keyword arguments, and validates it while the DAG is parsed."""
    from docker_delivery.errors import DeploySettingsInvalid
    from docker_delivery.operators.deploy import MinimumInServiceDeployOperator
    from docker_delivery.strategies.settings import MinimumInService

    base = {"service": "web", "environment": "prod", "image": "x", "router_port": 18001}
    by_fields = MinimumInServiceDeployOperator(
        task_id="a", replicas=4, min_in_service=2, drain_timeout=45, **base
    )
    by_model = MinimumInServiceDeployOperator(
        task_id="b", settings=MinimumInService(4, 2, drain_timeout=45), **base
    )
    assert by_fields.settings == by_model.settings == MinimumInService(4, 2, drain_timeout=45)
    with pytest.raises(DeploySettingsInvalid, match=r"min_in_service must be in 0\.\.replicas-1"):
        MinimumInServiceDeployOperator(task_id="c", replicas=2, min_in_service=2, **base)


def test_the_blue_green_steps_share_the_stages_settings() -> None:
    from docker_delivery.templates import delivery_pipeline

    data = two_envs()
    data["pipeline"]["stages"][1]["deploy"].update(preview_replicas=1, max_5xx_ratio=0.05)
    dag = delivery_pipeline(data)
    kinds = {t.task_id: type(t).__name__ for t in dag.tasks if t.task_id.startswith("production")}
    assert kinds == {
        "production.require_previous": "RequireTagOperator",
        "production.promote": "PromoteImageOperator",
        "production.deploy": "BlueGreenDeployOperator",
        "production.verify_preview": "ServiceHealthySensor",
        "production.switch": "SwitchTrafficOperator",
        "production.verify_health": "ServiceHealthySensor",
        "production.smoke_version": "PythonOperator",
        "production.retire": "RetireOperator",
        "production.record": "RecordDeliveryOperator",
    }
    for step in ("deploy", "switch", "retire"):
        op: Any = dag.get_task(f"production.{step}")
        assert op.settings.scale_down_delay == 5 and op.settings.post_switch_check == 3
        assert op.settings.preview_replicas == 1 and op.settings.max_5xx_ratio == 0.05
        assert op.settings.replicas == 2
        assert op.router_settings(op.environment_spec()).preview_port == 18183
        assert op.retries == 0 if step != "retire" else op.retries == 2
    preview: Any = dag.get_task("production.verify_preview")
    assert preview.addresses == "localhost:18183"  # the local engine, every interface
    assert dag.get_task("staging.deploy").__class__.__name__ == "RollingDeployOperator"
    assert dag.get_task("approve_production").__class__.__name__ == "DeliveryApprovalOperator"


def test_deploy_tasks_release_what_the_environment_spec_says() -> None:
    """The deploy task makes its release from the environment spec (secrets included), as
    apply_infra does: a pipeline's deploy never starts a configuration infra would roll back."""
    from docker_delivery.spec import load_spec
    from docker_delivery.templates import delivery_pipeline

    dag = delivery_pipeline(PIPELINES / "delivery_demo.yaml")
    deploy, infra = dag.task_dict["staging.deploy"], dag.task_dict["staging.apply_infra"]
    assert deploy.spec == infra.spec
    image = "127.0.0.1:5000/docker-delivery/demo-app@sha256:" + "a" * 64
    release = load_spec(deploy.spec).release_for("staging", image, resolve_secret=lambda r: "x")
    assert [s.name for s in release.secrets] == ["DATABASE_URL"]
    assert (
        release.config_id
        == load_spec(infra.spec)
        .release_for("staging", image, resolve_secret=lambda r: "x")
        .config_id
    )


def demo() -> dict[str, Any]:
    data = yaml.safe_load((PIPELINES / "delivery_demo.yaml").read_text())
    data["pipeline"]["build"]["context"] = str(APP)
    return data


def test_a_run_param_chooses_the_deployment_type() -> None:
    """delivery_demo: minimum in-service by default, blue/green when the run asks for it; the
    paths join before the checks, and retire follows the switch (skipped with the other path)."""
    from docker_delivery.templates import delivery_pipeline
    from docker_delivery.templates.pipeline import choose_deploy

    tasks = {t.task_id: t for t in plan_tasks(spec_of(demo()))}
    choose = tasks["staging.choose_deploy"]
    assert choose.upstream == ("staging.migrate_expand",)
    assert choose.extra == {
        "param": "deploy_staging",
        "paths": {
            "min_in_service": "staging.apply_infra",
            "blue_green": "staging.deploy_blue_green",
        },
    }
    assert tasks["staging.apply_infra"].upstream == ("staging.choose_deploy",)
    assert tasks["staging.deploy"].upstream == ("staging.apply_infra",)
    assert tasks["staging.switch"].upstream == ("staging.verify_preview",)
    health = tasks["staging.verify_health"]
    assert set(health.upstream) == {"staging.deploy", "staging.switch"}
    assert health.trigger_rule == "none_failed_min_one_success"
    assert tasks["staging.smoke_version"].trigger_rule == "all_success"
    retire = tasks["staging.retire"]
    assert "staging.switch" in retire.upstream and retire.trigger_rule == "all_success"
    assert tasks["staging.promote"].upstream == ("staging.smoke_version", "staging.smoke_greetings")
    contract = tasks["staging.migrate_contract"]
    assert "staging.retire" in contract.upstream and "staging.promote" in contract.upstream
    assert contract.trigger_rule == "none_failed_min_one_success"

    dag = delivery_pipeline(demo())
    param = dag.params.get_param("deploy_staging")
    assert param.value == "min_in_service" and param.schema["enum"] == [
        "min_in_service",
        "blue_green",
    ]
    kinds = {t.task_id: type(t).__name__ for t in dag.tasks}
    assert kinds["staging.deploy"] == "MinimumInServiceDeployOperator"
    assert kinds["staging.deploy_blue_green"] == "BlueGreenDeployOperator"
    assert kinds["staging.switch"] == "SwitchTrafficOperator"
    assert dag.task_dict["staging.record"].deployment_type == "{{ params.deploy_staging }}"
    paths = choose.extra["paths"]
    assert choose_deploy("deploy_staging", paths, params={"deploy_staging": "blue_green"}) == (
        "staging.deploy_blue_green"
    )
    with pytest.raises(ValueError, match="'ab' is not one of min_in_service, blue_green"):
        choose_deploy("deploy_staging", paths, params={"deploy_staging": "ab"})


def test_blue_green_runs_on_swarm_when_the_environment_says_so() -> None:
    from docker_delivery.templates import delivery_pipeline

    data = two_envs()
    data["environments"]["production"]["target"] = "swarm"
    spec_of(data)  # valid: blue/green (and A/B) take either target
    ops: dict[str, Any] = {t.task_id: t for t in delivery_pipeline(data).tasks}
    kinds = {
        i: ops[i].target_kind(ops[i].environment_spec())
        for i in ("production.deploy", "production.switch")
    }
    assert kinds == {"production.deploy": "swarm", "production.switch": "swarm"}
    assert ops["staging.deploy"].target_kind(ops["staging.deploy"].environment_spec()) == "swarm"
    from docker_delivery.operators.deploy import BlueGreenDeployOperator

    with pytest.raises(ValueError, match="target must be 'engine' or 'swarm', got 'k8s'"):
        BlueGreenDeployOperator(
            task_id="bg", service="web", environment="prod", image="x", router_port=1, target="k8s"
        )
    data["pipeline"]["stages"][0]["deploy"] = {"type": "min_in_service"}
    at = "pipeline.stages[staging].deploy.type"
    assert (
        f"{at}: min_in_service runs on target engine or ecs, and "
        "environments.staging.target is swarm" in (problems_of(data))
    )


def test_alternatives_are_checked_like_deploy() -> None:
    data = demo()
    stage = data["pipeline"]["stages"][0]
    stage["alternatives"] = [
        {"type": "rolling"},
        {"type": "min_in_service"},
        {"type": "blue_green", "preview_replicas": 9},
    ]
    del data["environments"]["staging"]["router"]["preview_port"]
    problems = problems_of(data)
    at = "pipeline.stages[staging]"
    assert (
        f"{at}.alternatives[0].type: rolling runs on target swarm or ecs, and "
        "environments.staging.target is engine" in problems
    )
    assert (
        f"{at}.alternatives[1].type: min_in_service is given twice (each deployment type once, "
        "deploy's included)" in problems
    )
    assert f"{at}.alternatives[2].preview_replicas: must be within 1..replicas (4)" in problems
    assert any(p.startswith("environments.staging.router.preview_port: required") for p in problems)


def test_deployments_wait_for_drains_as_long_as_the_environment_says() -> None:
    from docker_delivery.templates import delivery_pipeline

    data = two_envs()
    data["environments"]["staging"]["rollout"] = {"drain_timeout": 45}
    data["environments"]["staging"]["target"] = "engine"
    data["pipeline"]["stages"][0]["deploy"] = {"type": "min_in_service"}
    dag = delivery_pipeline(data)
    op: Any = dag.get_task("staging.deploy")
    assert type(op).__name__ == "MinimumInServiceDeployOperator"
    assert op.settings.drain_timeout == 45
    rolling: Any = delivery_pipeline(two_envs()).get_task("staging.deploy")
    assert rolling.settings.drain_timeout == 120  # the default
    data = two_envs()
    data["environments"]["staging"]["rollout"] = {"drain_timeout": 7.5}
    rolling = delivery_pipeline(data).get_task("staging.deploy")
    assert type(rolling).__name__ == "RollingDeployOperator"
    assert rolling.settings.drain_timeout == 7.5


# -- router slots: settings that cannot work together are refused by validate ----------------


def test_replicas_beyond_the_routers_slots_are_refused() -> None:
    """20 replicas behind the default 16 slots failed mid-deployment ("HAProxy has no server
    live/s17") and left containers outside the router; validate refuses it now."""
    data = demo()
    data["environments"]["staging"]["replicas"] = 20
    data["pipeline"]["stages"][0]["deploy"]["min_in_service"] = 10
    assert (
        "environments.staging.router.slots: 16 slots cannot hold 20 replicas (one instance per "
        "slot); give router.slots >= 20 or fewer replicas"
    ) in problems_of(data)
    data["environments"]["staging"]["router"]["slots"] = 20
    spec_of(data)  # enough now


def test_blue_green_of_40_replicas_needs_40_slots_per_colour() -> None:
    data = two_envs()
    data["environments"]["production"]["replicas"] = 40
    problems = problems_of(data)
    assert any(p.startswith("environments.production.router.slots: 16 slots") for p in problems)


def test_rolling_and_ab_need_room_for_old_and_new_side_by_side() -> None:
    data = two_envs()  # staging: rolling on Swarm, stages [1, 100%], infra changes at once
    data["environments"]["staging"]["replicas"] = 10
    at = "pipeline.stages[staging].deploy.type"
    assert (
        f"{at}: rolling of 10 replicas needs 20 router slots (an infrastructure change rolls in "
        "rollout.stages ['100%']); environments.staging.router.slots is 16: raise it to 20, "
        "or lower replicas"
    ) in problems_of(data)
    data["environments"]["staging"]["rollout"] = {"stages": [1, "100%"]}
    assert (
        f"{at}: rolling of 10 replicas needs 19 router slots (new tasks enter before old ones "
        "leave, stages [1, '100%']); environments.staging.router.slots is 16: raise it to 19, "
        "or lower replicas"
    ) in problems_of(data)
    data["environments"]["staging"]["router"]["slots"] = 19
    assert not [p for p in problems_of_or_none(data) if "slots" in p]

    data = two_envs()
    data["environments"]["production"]["replicas"] = 9
    data["pipeline"]["stages"][1]["deploy"] = {"type": "ab"}
    assert any(
        p.startswith("pipeline.stages[production].deploy.type: ab of 9 replicas needs 18 router")
        for p in problems_of(data)
    )


def problems_of_or_none(data: dict[str, Any]) -> list[str]:
    try:
        spec_of(data)
    except SpecInvalid as exc:
        return exc.problems
    return []


def test_a_rolling_deployments_peak_of_slots() -> None:
    from docker_delivery.strategies.rolling import Rolling

    assert Rolling(4, ("100%",)).slots_needed() == 8
    assert Rolling(4, (1, "50%", "100%")).slots_needed() == 6  # 4 new + the 2 old left
    assert Rolling(4, (1, "100%")).slots_needed(old=0) == 4  # a first rollout
    assert Rolling(10, (1, "100%")).slots_needed() == 19


# -- held rollouts: a human's Continue or Abort ----------------------------------------------


def held_spec() -> dict[str, Any]:
    return {
        "service": "heldapp",
        "image": "127.0.0.1:5000/dd-test/heldapp",
        "defaults": {"replicas": 4, "target": "swarm"},
        "environments": {
            "staging": {"router": {"port": 18555, "preview_port": 18556}},
            "production": {"target": "engine", "router": {"port": 18557, "preview_port": 18558}},
        },
        "pipeline": {
            "mode": "continuous_deployment",
            "build": {"context": str(APP)},
            "stages": [
                {
                    "environment": "staging",
                    "deploy": {"type": "rolling", "stages": [1, "50%", "100%"], "hold_after": [1]},
                },
                {
                    "environment": "production",
                    "deploy": {"type": "blue_green", "hold_before_switch": True},
                },
            ],
        },
    }


def test_a_held_rollout_plans_a_deploy_up_to_the_hold_a_hold_and_an_abort() -> None:
    from docker_delivery.templates import delivery_pipeline

    spec = spec_of(held_spec())
    tasks = {t.task_id: t for t in plan_tasks(spec)}
    assert [t for t in tasks if t.startswith("staging.")] == [
        "staging.apply_infra",
        "staging.deploy_stage_1",
        "staging.hold_stage_1",
        "staging.deploy",
        "staging.verify_health",
        "staging.promote",
        "staging.abort",
        "staging.record",
    ]
    assert tasks["staging.deploy_stage_1"].stage.deploy.until_stage == 1
    assert tasks["staging.deploy"].stage.deploy.until_stage is None
    assert tasks["staging.abort"].upstream == ("staging.hold_stage_1",)
    assert tasks["production.hold_switch"].upstream == ("production.verify_preview",)
    assert tasks["production.switch"].upstream == ("production.hold_switch",)
    dag = delivery_pipeline(held_spec())
    hold = dag.get_task("staging.hold_stage_1")
    assert type(hold).__name__ == "HoldRolloutOperator"
    assert hold.options == ["Continue", "Abort"]
    assert hold.options_mapping == {"Continue": "staging.deploy", "Abort": "staging.abort"}
    assert hold.execution_timeout is None  # a human's time is not the task's
    assert hold.subject.startswith("Continue the rollout of heldapp in staging? (held after")
    assert dag.get_task("staging.deploy_stage_1").settings.until_stage == 1
    abort = dag.get_task("staging.abort")
    assert type(abort).__name__ == "AbortRolloutOperator" and abort.settings.type == "rolling"
    assert abort.trigger_rule == "none_failed_min_one_success"
    record = dag.get_task("staging.record")
    assert record.hold_task_ids == ["staging.hold_stage_1"]
    assert record.abort_task_id == "staging.abort"
    assert record.deploy_task_ids == ["staging.deploy", "staging.deploy_stage_1"]
    assert set(dag.get_task("production.hold_switch").options_mapping.values()) == {
        "production.switch",
        "production.abort",
    }


def test_holds_out_of_range_with_alternatives_or_on_ecs_are_refused() -> None:
    data = held_spec()
    data["pipeline"]["stages"][0]["deploy"]["hold_after"] = [3]
    assert any(
        p.startswith("pipeline.stages[staging].deploy.hold_after: 3 is not a stage followed")
        for p in problems_of(data)
    ), problems_of(data)
    data = held_spec()
    data["pipeline"]["stages"][1]["alternatives"] = [{"type": "min_in_service"}]
    assert any("takes no alternatives" in p for p in problems_of(data))
    data = held_spec()
    data["pipeline"]["stages"][0]["deploy"] = {"type": "ab", "steps": [10, 100], "hold_after": [2]}
    assert any("hold_after: 2 is not a step followed" in p for p in problems_of(data))
