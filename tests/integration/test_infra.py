"""Infrastructure changes on the real engine and Swarm, behind the real HAProxy, under load:
env-variable changes roll without a failed request and keep the digest, secrets never leak,
replicas scale, and drift between two environments is reported."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kit.cleanup import remove_containers
from kit.loadgen import LoadGenerator, free_port

from docker_delivery.infra import apply, drift, plan, read_live, strategy_for
from docker_delivery.sensors import DriftSensor
from docker_delivery.spec import SecretRef, ServiceSpec, load_spec
from docker_delivery.strategies.deploy import deploy

pytestmark = pytest.mark.timeout(300)


def make_spec(
    service: str,
    bed: Any,
    *,
    target: str = "engine",
    replicas: int = 4,
    setting: str = "0",
    extra: str = "",
    environments: str | None = None,
) -> ServiceSpec:
    envs = environments or f"  test:\n    router: {{port: {free_port()}}}\n"
    return load_spec(
        f"""
service: {service}
defaults:
  target: {target}
  replicas: {replicas}
  env: {{APP_RELEASE: v1, SETTING: "{setting}", EXIT_ON_SIGTERM_IMMEDIATELY: "1"}}
  secrets: [{{name: DB_PASSWORD, from: airflow_variable, ref: dd_test_db_password}}]
  health_check: {{interval: 0.25, timeout: 1, healthy_threshold: 2, unhealthy_threshold: 3,
                 start_period: 10}}
  stop_grace: 10
  router: {{image: {bed.haproxy_image}, slots: 10, check_interval_ms: 500, address: 127.0.0.1}}
{extra}
environments:
{envs}"""
    )


def first_deploy(client: Any, spec: ServiceSpec, env: str, image: str, resolve: Any) -> None:
    deploy(
        client,
        spec.release_for(env, image, resolve_secret=resolve),
        strategy_for(spec.environment(env)),
        router=spec.router_for(env),
        check=spec.health_check_for(env),
        owner="test/first-deploy",
        log=lambda line: None,
    )


def exec_out(client: Any, container: Any, script: str) -> str:
    result = container.exec_run(["sh", "-c", script])
    assert result.exit_code == 0, result.output
    return str(result.output.decode()).strip()


def app_containers(client: Any, service: str, environment: str = "test") -> list[Any]:
    """The running containers of the service's instances: an engine's, or Swarm tasks' on
    whichever node of the bed's Swarm runs them (through that node's engine)."""
    from docker_delivery.targets.inventory import Inventory
    from docker_delivery.targets.nodes import node_engine

    return [
        node_engine(client, i.node, what=i.name).containers.get(i.id)
        for i in Inventory(client).instances(service, environment)
    ]


@pytest.fixture
def service(docker_client: Any) -> Iterator[str]:
    name = f"inf{uuid.uuid4().hex[:6]}"
    yield name
    label = f"io.docker-delivery.service={name}"
    for svc in docker_client.services.list(filters={"label": label}):
        svc.remove()
    remove_containers(docker_client, label=label)  # Swarm may remove its tasks meanwhile
    remove_containers(docker_client, name=f"dd-lock-{name}-")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            for secret in docker_client.secrets.list(filters={"label": label}):
                secret.remove()
            for net in docker_client.networks.list(filters={"label": label}):
                net.remove()
            for net in docker_client.networks.list(names=[f"dd-{name}-"]):
                net.remove()
            break
        except Exception:  # Swarm tasks still detaching
            time.sleep(0.5)


@pytest.fixture
def secret() -> str:
    return f"pw-{uuid.uuid4().hex}"


def test_env_var_changes_roll_with_no_failed_request_and_keep_the_digest(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str, secret: str
) -> None:
    port = free_port()
    envs = f"  test:\n    router: {{port: {port}}}\n"

    def spec(setting: str) -> ServiceSpec:
        return make_spec(service, bed, setting=setting, environments=envs)

    def resolve(ref: SecretRef) -> str:
        return secret

    first_deploy(docker_client, spec("0"), "test", demo_images["v1"], resolve)
    before = {u.digest for u in read_live(docker_client, service, "test", "engine")}
    lines: list[str] = []
    plans = []
    started = time.monotonic()
    with LoadGenerator(f"http://127.0.0.1:{port}/", rate=200, max_duration=180) as load:
        time.sleep(1.0)
        load.mark("applies")
        at_start = load.snapshot().total
        setting = 0
        while load.snapshot().total - at_start < 2100 and setting < 10:
            setting += 1
            planned = plan(docker_client, spec(str(setting)), "test", resolve_secret=resolve)
            plans.append(planned)
            result = apply(docker_client, planned, owner="test/infra", log=lines.append)
            assert result.changed and result.replaced == 4
        load.mark("after")
        time.sleep(1.0)
    applies_s = time.monotonic() - started
    report = load.report
    assert report is not None
    print(report.summary())
    print(f"{setting} env-var applies in {applies_s:.1f}s: {report.by_phase['applies']}")
    assert report.failed == 0, report.failures
    assert report.by_phase["applies"]["total"] >= 2000
    for number, planned in enumerate(plans, start=1):
        (change,) = planned.changes
        assert (change.kind, change.name, change.action) == ("env", "SETTING", "change")
        assert (change.before, change.after) == (repr(str(number - 1)), repr(str(number)))
    # The digest never changed; every instance runs the last value, and sees the secret.
    units = read_live(docker_client, service, "test", "engine")
    assert {u.digest for u in units} == before and len(units) == 4
    assert all(u.config == plans[-1].config for u in units)
    for container in app_containers(docker_client, service):
        assert exec_out(docker_client, container, "printenv SETTING") == str(setting)
        assert exec_out(docker_client, container, 'cat "$DB_PASSWORD_FILE"') == secret
    # Nothing left to do is a success that says so.
    again = plan(docker_client, spec(str(setting)), "test", resolve_secret=resolve)
    assert again.empty and "no changes" in again.describe()
    done = apply(docker_client, again, owner="test/infra", log=lines.append)
    assert not done.changed and done.summary == "no changes"


def test_a_secret_never_reaches_the_plan_labels_inspect_or_log(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str, secret: str
) -> None:
    spec = make_spec(service, bed, replicas=2)
    first_deploy(docker_client, spec, "test", demo_images["v1"], lambda ref: "first-" + secret)
    lines: list[str] = []
    planned = plan(docker_client, spec, "test", resolve_secret=lambda ref: secret)
    (change,) = planned.changes
    assert (change.kind, change.name, change.before, change.after) == (
        "secret",
        "DB_PASSWORD",
        "***",
        "***",
    )
    result = apply(docker_client, planned, owner="test/infra", log=lines.append)
    containers = app_containers(docker_client, service)
    assert len(containers) == 2
    for container in containers:
        assert exec_out(docker_client, container, 'cat "$DB_PASSWORD_FILE"') == secret
    seen = {
        "plan": planned.describe() + repr(planned),
        "plan dict (XCom)": json.dumps(planned.as_dict()),
        "result dict (XCom)": json.dumps(result.as_dict()),
        "log": "\n".join(lines),
        "labels": json.dumps([c.labels for c in containers]),
        "docker inspect": json.dumps([c.attrs for c in containers]),
    }
    for where, text in seen.items():
        assert secret not in text, f"the secret is in the {where}"
        assert f"first-{secret}" not in text, f"the old secret is in the {where}"


def test_apply_infra_operator_masks_the_secret_in_the_task_log_and_xcom(
    bed: Any,
    docker_client: Any,
    demo_images: dict[str, str],
    service: str,
    secret: str,
    airflow_db: None,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    import pendulum
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.xcom import XComModel
    from airflow.sdk import DAG
    from airflow.utils.session import create_session

    from docker_delivery.operators.infra import ApplyInfraOperator

    spec = make_spec(service, bed, replicas=2)
    first_deploy(docker_client, spec, "test", demo_images["v1"], lambda ref: "first-" + secret)
    monkeypatch.setenv("AIRFLOW_VAR_DD_TEST_DB_PASSWORD", secret)
    dag_id = f"dd_test_infra_{service}"
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:
        ApplyInfraOperator(task_id="infra", spec=spec, environment="test")  # kept as a dict
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    capfd.readouterr()
    run = dag.test()
    captured = capfd.readouterr()
    log = captured.out + captured.err
    [ti] = run.get_task_instances()
    with create_session() as session:
        xcoms = [
            row.value
            for row in session.query(XComModel).filter_by(dag_id=dag_id, run_id=run.run_id)
        ]
    assert str(ti.state) == "success", log[-3000:]
    assert "secret DB_PASSWORD" in log and "***" in log  # the plan is in the task log
    (value,) = xcoms
    text = value if isinstance(value, str) else json.dumps(value)
    assert '"secret"' in text and "DB_PASSWORD" in text
    for where, found in {"task log": log, "XCom": text}.items():
        assert secret not in found, f"the secret is in the {where}"
    for container in app_containers(docker_client, service):
        assert exec_out(docker_client, container, 'cat "$DB_PASSWORD_FILE"') == secret
        assert secret not in json.dumps(container.labels)


def test_swarm_env_change_secret_rotation_and_scaling_drop_no_request(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str, secret: str
) -> None:
    port = free_port()
    envs = f"  test:\n    router: {{port: {port}}}\n"

    def spec(setting: str, replicas: int) -> ServiceSpec:
        extra = "  resources: {memory: 128m}"
        return make_spec(
            service,
            bed,
            target="swarm",
            replicas=replicas,
            setting=setting,
            extra=extra,
            environments=envs,
        )

    first_deploy(docker_client, spec("0", 2), "test", demo_images["v1"], lambda ref: secret)
    before = {u.digest for u in read_live(docker_client, service, "test", "swarm")}
    steps = [("1", 2, secret), ("1", 2, "rotated-" + secret), ("1", 3, "rotated-" + secret)]
    steps.append(("1", 1, "rotated-" + secret))
    kinds = []
    lines: list[str] = []
    with LoadGenerator(f"http://127.0.0.1:{port}/", rate=150, max_duration=180) as load:
        for setting, replicas, value in steps:
            planned = plan(
                docker_client,
                spec(setting, replicas),
                "test",
                resolve_secret=lambda ref, v=value: v,
            )
            kinds.append([(c.kind, c.action) for c in planned.changes])
            apply(docker_client, planned, owner="test/infra", log=lines.append)
        load.mark("after")
        time.sleep(1.0)
    report = load.report
    assert report is not None
    print(report.summary())
    assert report.failed == 0, report.failures
    assert kinds == [
        [("env", "change")],
        [("secret", "change")],
        [("replicas", "scale")],
        [("replicas", "scale")],
    ]
    units = read_live(docker_client, service, "test", "swarm")
    assert {u.digest for u in units} == before
    assert [u.count for u in units] == [1]
    assert units[0].limits.memory == 128 * 1024**2
    # The rotated value is a new Docker secret; the old one is gone.
    label = f"io.docker-delivery.service={service}"
    secrets = docker_client.secrets.list(filters={"label": label})
    assert len(secrets) == 1 and secrets[0].name.startswith(f"{service}-test-DB_PASSWORD-")
    (container,) = app_containers(docker_client, service)
    assert exec_out(docker_client, container, 'cat "$DB_PASSWORD_FILE"') == "rotated-" + secret
    assert exec_out(docker_client, container, "printenv SETTING") == "1"
    for text in ("\n".join(lines), json.dumps(container.attrs), json.dumps(container.labels)):
        assert secret not in text


def test_drift_between_two_environments(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str, secret: str
) -> None:
    envs = (
        f"  staging:\n    router: {{port: {free_port()}}}\n"
        f"  prod:\n    replicas: 2\n    env: {{LOG_LEVEL: warn}}\n"
        f"    router: {{port: {free_port()}}}\n"
    )
    extra = "  networks: [dd-" + service + "-shared]"
    spec = make_spec(service, bed, replicas=1, extra=extra, environments=envs)
    docker_client.networks.create(
        f"dd-{service}-shared", driver="bridge", labels={"io.docker-delivery.service": service}
    )
    resolve: Callable[[SecretRef], str] = lambda ref: secret  # noqa: E731
    for env in ("staging", "prod"):
        first_deploy(docker_client, spec, env, demo_images["v1"], resolve)
    report = drift(docker_client, spec, "staging", "prod", resolve_secret=resolve)
    print(report.describe())
    assert not report.drifted, report.describe()
    declared = {d.item for d in report.differences if d.declared}
    assert {"replicas", "env LOG_LEVEL", "router port"} <= declared
    # Two changes made by hand in prod: a variable deployed outside the spec, and a network.
    release = spec.release_for("prod", demo_images["v1"], resolve_secret=resolve)
    hand = dataclasses.replace(release, env={**release.env, "HOTFIX": "1"})
    deploy(
        docker_client,
        hand,
        strategy_for(spec.environment("prod")),
        router=spec.router_for("prod"),
        check=spec.health_check_for("prod"),
        owner="someone/by-hand",
        log=lambda line: None,
    )
    extra_net = docker_client.networks.create(
        f"dd-{service}-debug", driver="bridge", labels={"io.docker-delivery.service": service}
    )
    extra_net.connect(app_containers(docker_client, service, "prod")[0])
    report = drift(docker_client, spec, "staging", "prod", resolve_secret=resolve)
    print(report.describe())
    assert report.drifted
    sensor = DriftSensor(task_id="drift", spec=spec, environments=["staging", "prod"])
    sensor._secret = resolve  # type: ignore[method-assign]  # the test's secret, no Airflow Variable
    poked = sensor.poke({})  # type: ignore[arg-type]
    assert not poked.is_done and poked.xcom_value == report.as_dict()
    undeclared = {d.item for d in report.undeclared}
    assert undeclared == {"env HOTFIX", f"network dd-{service}-debug"}
    off = {(c.kind, c.name) for c in report.off_spec["prod"]}
    assert off == {("env", "HOTFIX"), ("network", f"dd-{service}-debug")}
    assert report.off_spec["staging"] == ()
    assert secret not in report.describe() + json.dumps(report.as_dict())
    # Applying prod's spec puts it back (a roll, since the variable needs new containers).
    planned = plan(docker_client, spec, "prod", resolve_secret=resolve)
    assert planned.roll and {c.kind for c in planned.changes} == {"env", "network"}
    apply(docker_client, planned, owner="test/infra", log=lambda line: None)
    assert not drift(docker_client, spec, "staging", "prod", resolve_secret=resolve).drifted
    assert sensor.poke({}).is_done  # type: ignore[arg-type]


def test_an_env_change_rolls_the_serving_colour_in_place(
    bed: Any, docker_client: Any, demo_images: dict[str, str], service: str, secret: str
) -> None:
    """After a blue/green deployment (switched and retired), an infrastructure change rolls the
    colour that serves, in place, and public keeps routing to it."""
    from docker_delivery.strategies.bluegreen import (
        BlueGreen,
        deploy_idle,
        list_running,
        retire,
        switch_traffic,
    )

    port, preview = free_port(), free_port()
    envs = f"  test:\n    router: {{port: {port}, preview_port: {preview}}}\n"

    def spec(setting: str) -> ServiceSpec:
        return make_spec(service, bed, replicas=2, setting=setting, environments=envs)

    resolve: Callable[[SecretRef], str] = lambda ref: secret  # noqa: E731
    first_deploy(docker_client, spec("0"), "test", demo_images["v1"], resolve)
    s0 = spec("0")
    kw: dict[str, Any] = dict(
        router=s0.router_for("test"), check=s0.health_check_for("test"), owner="test", log=print
    )
    release = s0.release_for("test", demo_images["v2"], resolve_secret=resolve)
    settings = BlueGreen(scale_down_delay=0.1, post_switch_check=0.5)
    deploy_idle(docker_client, release, settings, **kw)
    switch_traffic(docker_client, release, settings, **kw)
    time.sleep(0.5)
    retire(docker_client, service, "test", settings, **kw)
    with LoadGenerator(f"http://127.0.0.1:{port}/", rate=100, max_duration=120) as load:
        load.mark("apply")
        planned = plan(docker_client, spec("1"), "test", resolve_secret=resolve)
        result = apply(docker_client, planned, owner="test/infra", log=print)
        load.mark("after")
        time.sleep(1.0)
    report = load.report
    assert report is not None
    print(report.summary())
    assert report.failed == 0, report.failures
    assert result.changed and result.replaced == 2
    running = list_running(docker_client, service, "test", 8080)
    assert {r.group for r in running} == {"blue"} and len(running) == 2
    assert {r.digest for r in running} == {demo_images["v2"].split("@")[1]}  # unchanged
    container = app_containers(docker_client, service)[0]
    assert exec_out(docker_client, container, "echo $SETTING") == "1"
