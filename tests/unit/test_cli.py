"""`docker-delivery`: validate (every problem with its field path), plan, init."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from docker_delivery.cli import main

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "dags" / "pipelines"
APP = ROOT / "dags" / "demo_app"
CLI = str(Path(sys.executable).parent / "docker-delivery")


def base() -> dict[str, Any]:
    data = yaml.safe_load((PIPELINES / "two_envs.yaml").read_text())
    data["pipeline"]["build"]["context"] = str(APP)
    return data


def stage(d: dict[str, Any], i: int) -> dict[str, Any]:
    return d["pipeline"]["stages"][i]  # type: ignore[no-any-return]


Mutation = Callable[[dict[str, Any]], Any]

# name -> (what breaks the spec, the field path its message must name)
BROKEN: dict[str, tuple[Mutation | str, str]] = {
    "deploy_type_typo": (
        lambda d: stage(d, 1)["deploy"].update(type="bluegreen"),
        "pipeline.stages[production].deploy.type: must be one of",
    ),
    "deploy_type_missing": (
        lambda d: stage(d, 1)["deploy"].pop("type"),
        "pipeline.stages[production].deploy.type: required",
    ),
    "deploy_setting_misspelt": (
        lambda d: stage(d, 1)["deploy"].update(scale_down_dely=3),
        "pipeline.stages[production].deploy.scale_down_dely: unknown key (did you mean "
        "'scale_down_delay'?)",
    ),
    "pipeline_key_misspelt": (
        lambda d: d["pipeline"].update(stagse=[]),
        "pipeline.stagse: unknown key (did you mean 'stages'?)",
    ),
    "top_key_misspelt": (
        lambda d: d.update(pipelnie=d.pop("pipeline")),
        "pipelnie: unknown key (did you mean 'pipeline'?)",
    ),
    "pipeline_missing": (lambda d: d.pop("pipeline"), "pipeline: required"),
    "negative_replicas": (
        lambda d: d["environments"]["production"].update(replicas=-1),
        "environments.production.replicas: must be >= 0",
    ),
    "replicas_as_string": (
        lambda d: d["environments"]["production"].update(replicas="3"),
        "environments.production.replicas: must be an integer",
    ),
    "blue_green_without_preview_port": (
        lambda d: d["environments"]["production"]["router"].pop("preview_port"),
        "environments.production.router.preview_port: required by blue_green",
    ),
    "rolling_on_the_engine": (
        lambda d: d["environments"]["staging"].pop("target"),
        "pipeline.stages[staging].deploy.type: rolling runs on target swarm",
    ),
    "stage_of_an_unknown_environment": (
        lambda d: stage(d, 1).update(environment="prod"),
        "pipeline.stages[prod].environment: no such environment",
    ),
    "two_routers_on_one_port": (
        lambda d: d["environments"]["production"]["router"].update(port=18181),
        "environments.production.router.port: 18181 is also staging's router port",
    ),
    "delivery_without_a_gate": (
        lambda d: stage(d, 1).update(approval=False),
        "pipeline.mode: continuous_delivery needs approval",
    ),
    "deployment_with_a_gate": (
        lambda d: d["pipeline"].update(mode="continuous_deployment"),
        "pipeline.stages[production].approval: continuous_deployment has no approval gates",
    ),
    "test_name_with_spaces": (
        lambda d: d["pipeline"]["tests"][0].update(name="Unit Tests"),
        "pipeline.tests[Unit Tests].name:",
    ),
    "test_command_string_without_shell": (
        lambda d: d["pipeline"]["tests"][0].update(command="pytest -q"),
        "pipeline.tests[unit].command: a string is a shell line",
    ),
    "deploy_retried_automatically": (
        lambda d: d["pipeline"].update(tasks={"deploy": {"retries": 2}}),
        "pipeline.tasks.deploy.retries: must be 0",
    ),
    "schedule_not_cron": (
        lambda d: d["pipeline"].update(trigger={"schedule": "every day"}),
        "pipeline.trigger.schedule: not a cron expression",
    ),
    "schedule_and_asset": (
        lambda d: d["pipeline"].update(
            trigger={"schedule": "@daily", "asset": {"environment": "qa"}}
        ),
        "pipeline.trigger: give schedule or asset, not both",
    ),
    "ab_steps_decreasing": (
        lambda d: stage(d, 1).update(deploy={"type": "ab", "steps": [50, 10, 100]}),
        "pipeline.stages[production].deploy.steps: must increase",
    ),
    "smoke_both_http_and_command": (
        lambda d: stage(d, 0)["verify"]["smoke"][0].update(command=["true"]),
        "pipeline.stages[staging].verify.smoke[version].http: give either http",
    ),
    "smoke_path_relative": (
        lambda d: stage(d, 0)["verify"]["smoke"][0]["http"].update(path="version"),
        "pipeline.stages[staging].verify.smoke[version].http.path: must be an absolute path",
    ),
    "image_missing": (lambda d: d.pop("image"), "image: required"),
    "image_with_a_tag": (
        lambda d: d.update(image="127.0.0.1:5000/shop/web:latest"),
        "image: '127.0.0.1:5000/shop/web:latest' names a tag",
    ),
    "rolling_stage_beyond_replicas": (
        lambda d: stage(d, 0)["deploy"].update(stages=[5]),
        "pipeline.stages[staging].deploy.stages: stage 5 must be within 1..replicas (2)",
    ),
    "mode_unknown": (
        lambda d: d["pipeline"].update(mode="continuous"),
        "pipeline.mode: must be one of",
    ),
    "no_stages": (lambda d: d["pipeline"].update(stages=[]), "pipeline.stages: must not be empty"),
    "stage_twice": (
        lambda d: d["pipeline"]["stages"].append(copy.deepcopy(stage(d, 0))),
        "pipeline.stages[staging]: the environment 'staging' is given twice",
    ),
    "task_kind_unknown": (
        lambda d: d["pipeline"].update(tasks={"deploi": {"retries": 0}}),
        "pipeline.tasks.deploi: must be one of",
    ),
    "migrate_without_migrations": (
        lambda d: stage(d, 0).update(migrate=True),
        "pipeline.stages[staging].migrate: the pipeline has no migrations section",
    ),
    "context_missing": (
        lambda d: d["pipeline"]["build"].update(context="/nonexistent/app"),
        "pipeline.build.context: /nonexistent/app is not a directory",
    ),
    "environment_without_a_stage": (
        lambda d: d["environments"].update(qa={"router": {"port": 18190}}),
        "environments.qa: no stage delivers it",
    ),
    "secret_as_a_literal": (
        lambda d: d["environments"]["production"].update(env={"DB_PASSWORD": "hunter2"}),
        "environments.production.env.DB_PASSWORD: the name says secret",
    ),
    "unset_variable": (
        lambda d: d.update(image="${DD_TEST_SURELY_UNSET}/x"),
        "image: ${DD_TEST_SURELY_UNSET} is not set",
    ),
    "yaml_syntax": ("service: x\n  bad: [\n", "YAML: line 2, column 6"),
    "yaml_duplicate_key": ("service: x\nservice: y\n", "YAML: line 2, column 1: the key"),
    "not_a_mapping": ("- just\n- a list\n", "the spec must be a mapping"),
}


def write(tmp_path: Path, name: str, breaks: Mutation | str) -> Path:
    path = tmp_path / f"{name}.yaml"
    if isinstance(breaks, str):
        path.write_text(breaks)
    else:
        data = base()
        breaks(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_there_are_at_least_twenty_broken_specs() -> None:
    assert len(BROKEN) >= 20


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_validate_names_the_field_of_each_problem(tmp_path: Path, name: str) -> None:
    breaks, expected = BROKEN[name]
    path = write(tmp_path, name, breaks)
    code, out = run("validate", str(path))
    assert code == 1
    assert out.startswith(f"{path}: invalid, ")
    assert f"  - {expected}" in out, out
    assert "Traceback" not in out


def test_the_installed_command_lists_every_broken_spec_without_a_traceback(
    tmp_path: Path,
) -> None:
    paths = [write(tmp_path, name, breaks) for name, (breaks, _) in sorted(BROKEN.items())]
    env = {k: v for k, v in os.environ.items() if k != "DD_TEST_SURELY_UNSET"}
    done = subprocess.run(
        [CLI, "validate", *map(str, paths)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    for path, (_, expected) in zip(paths, (BROKEN[n] for n in sorted(BROKEN)), strict=True):
        block = done.stdout.split(f"{path}: invalid, ")[1].split(".yaml: invalid, ")[0]
        assert f"  - {expected}" in block


def ecs_router(d: dict[str, Any]) -> dict[str, Any]:
    return d["environments"]["production"]["aws"]["router"]  # type: ignore[no-any-return]


ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/t{}/0"
DNS = {
    "type": "route53",
    "zone_id": "Z0123",
    "record_name": "api.shop.example.com",
    "ttl": 60,
    "connection_lifetime": 30,
    "retire_wait": 45,
    "targets": {"blue": {"values": ["10.0.0.5"]}, "green": {"values": ["10.0.0.6"]}},
}
# What AWS cannot do, refused by validate before anything runs (dags/pipelines/ecs.yaml broken).
BROKEN_AWS: dict[str, tuple[Mutation, str]] = {
    "six_target_groups": (
        lambda d: ecs_router(d)["target_groups"].update({f"g{i}": ARN.format(i) for i in range(4)}),
        "environments.production.aws.router.target_groups: 6 given; an ALB listener forwards to "
        "at most 5",
    ),
    "weight_over_999": (
        lambda d: ecs_router(d)["target_groups"].update(
            blue={"arn": ARN.format(1), "weight": 1000}
        ),
        "environments.production.aws.router.target_groups.blue.weight: must be <= 999",
    ),
    "ttl_wait_shorter_than_the_ttl": (
        lambda d: d["environments"]["production"]["aws"].update(router=DNS),
        "environments.production.aws.router.retire_wait: 45s is shorter than the record's TTL "
        "plus the connection lifetime (60s + 30s = 90s)",
    ),
    "a_secret_that_is_no_arn": (
        lambda d: d["defaults"]["secrets"][0].update({"from": "airflow_connection", "ref": "db"}),
        "environments.staging.secrets[DATABASE_URL].from: on ECS a secret is a Secrets Manager "
        "or SSM parameter ARN",
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN_AWS))
def test_validate_refuses_what_aws_cannot_do(tmp_path: Path, name: str) -> None:
    breaks, expected = BROKEN_AWS[name]
    data = yaml.safe_load((PIPELINES / "ecs.yaml").read_text())
    data["pipeline"]["build"]["context"] = str(APP)
    breaks(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code, out = run("validate", str(path))
    assert code == 1 and f"  - {expected}" in out, out


def test_validate_accepts_the_examples() -> None:
    specs = sorted(str(p) for p in PIPELINES.glob("*.yaml"))
    code, out = run("validate", *specs)
    assert code == 0, out
    assert "two_envs.yaml: valid: DAG deliver_two_envs, 22 tasks; staging (rolling), " in out


def test_validate_json(tmp_path: Path) -> None:
    path = write(tmp_path, "bad", BROKEN["negative_replicas"][0])
    code, out = run("validate", "--json", str(path))
    assert code == 1
    assert json.loads(out) == {
        "spec": str(path),
        "valid": False,
        "problems": ["environments.production.replicas: must be >= 0"],
    }


def test_plan_lists_the_tasks_per_environment_in_order() -> None:
    code, out = run("plan", str(PIPELINES / "two_envs.yaml"))
    assert code == 0
    lines = out.splitlines()
    heads = [i for i, line in enumerate(lines) if not line.startswith("    ")]
    sections = [lines[i].strip() for i in heads]
    assert sections[2] == "build once:"
    assert sections[3].startswith("staging: rolling on swarm, http://localhost:18181/")
    assert sections[4].startswith("production (after an approval): blue/green on swarm")
    production = [line.split()[1] for line in lines[heads[4] + 1 :]]
    assert production == [
        "approve_production",
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


def test_plan_of_a_broken_spec_lists_its_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "bad", BROKEN["deploy_type_typo"][0])
    code, out = run("plan", str(path))
    assert code == 1 and "deploy.type: must be one of" in out


def test_usage_errors_exit_2_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert run()[0] == 2
    assert run("frobnicate")[0] == 2
    assert run("plan")[0] == 2
    err = capsys.readouterr().err
    assert "docker-delivery: " in err and "Traceback" not in err


# -- init ------------------------------------------------------------------------------------


def test_init_from_flags_writes_a_valid_spec_and_a_dag_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("FROM scratch\n")
    code, out = run(
        "init",
        "--service",
        "shop-api",
        "--context",
        "app",
        "--environments",
        "qa,staging,production",
        "--deploy",
        "staging=rolling",
        "--router-port",
        "qa=19000",
        "--test",
        "unit=pytest -q --junit-xml /tmp/j.xml",
        "--no-input",
    )
    assert code == 0, out
    spec_path = tmp_path / "dags" / "pipelines" / "shop-api.yaml"
    dag_path = tmp_path / "dags" / "deliver_shop_api.py"
    assert f"{Path('dags/pipelines/shop-api.yaml')}: valid" in out
    data = yaml.safe_load(spec_path.read_text())
    assert data["pipeline"]["build"]["context"] == "../../app"
    assert [s["deploy"]["type"] for s in data["pipeline"]["stages"]] == [
        "min_in_service",
        "rolling",
        "blue_green",
    ]
    assert data["environments"]["staging"]["target"] == "swarm"
    assert data["environments"]["qa"]["router"]["port"] == 19000
    assert data["pipeline"]["stages"][2]["approval"] is True
    assert data["pipeline"]["tests"] == [
        {"name": "unit", "command": ["pytest", "-q", "--junit-xml", "/tmp/j.xml"]}
    ]
    text = dag_path.read_text()
    assert 'delivery_pipeline(Path(__file__).parent / "pipelines" / "shop-api.yaml")' in text
    assert "airflow" in text.lower() and "dag" in text  # Airflow's file heuristic finds it
    # again: refused, unless --force
    code, out = run("init", "--service", "shop-api", "--no-input")
    assert code == 1 and "exists; not overwritten" in out
    assert run("init", "--service", "shop-api", "--context", "app", "--force", "--no-input")[0] == 0


def test_the_dag_file_init_writes_parses_into_the_dag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runpy

    monkeypatch.chdir(tmp_path)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    code, _ = run("init", "--service", "web", "--type", "min_in_service", "--no-input")
    assert code == 0
    namespace = runpy.run_path(str(tmp_path / "dags" / "deliver_web.py"))
    dag = namespace["dag"]
    assert dag.dag_id == "deliver_web"
    assert "production.deploy" in dag.task_dict and "approve_production" in dag.task_dict


def test_init_asks_in_a_terminal(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Dockerfile").write_text("FROM scratch\n")
    answers = ["shop", "", "src", "9000", "staging", "rolling", "18400", ""]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the real command, on a terminal
        os.chdir(tmp_path)
        os.execv(CLI, [CLI, "init"])
    transcript = b""
    deadline = time.monotonic() + 60
    try:
        while answers and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if not ready:
                continue
            transcript += os.read(fd, 4096)
            if transcript.rstrip().endswith(b"]:"):
                os.write(fd, answers.pop(0).encode() + b"\n")
                transcript += b"\n"
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            transcript += chunk
    finally:
        _, status = os.waitpid(pid, 0)
    text = transcript.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "Service name" in text and "Deployment type for staging" in text
    data = yaml.safe_load((tmp_path / "dags" / "pipelines" / "shop.yaml").read_text())
    assert data["image"] == "localhost:5000/shop"
    assert data["defaults"]["port"] == 9000
    assert data["environments"] == {"staging": {"target": "swarm", "router": {"port": 18400}}}
    assert data["pipeline"]["mode"] == "continuous_delivery"
    assert "valid" in text


def test_init_without_a_terminal_needs_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert run("init")[0] == 2
    assert run("init", "--service", "Bad_Name", "--no-input")[0] == 2
    assert not (tmp_path / "dags").exists()


def test_metrics_reads_the_ledger(tmp_path: Path) -> None:
    import datetime as dt

    from docker_delivery.ledger import DeploymentRecord, Ledger

    now = dt.datetime.now(dt.timezone.utc)
    ledger = Ledger(tmp_path / "ledger.db")
    for n, outcome in enumerate(["success", "failed", "success", "success"]):
        digest = f"sha256:{n:064x}"
        ledger.record(
            DeploymentRecord(
                service="web",
                environment="staging",
                digest=digest,
                previous_digest=None,
                image=f"127.0.0.1:5000/web@{digest}",
                deployment_type="min_in_service",
                outcome=outcome,  # type: ignore[arg-type]
                started_at=now - dt.timedelta(hours=10 - n, minutes=5),
                finished_at=now - dt.timedelta(hours=10 - n),
                revision=None,
                committed_at=None,
                dag_id="deliver_web",
                run_id=f"run{n}",
                approved_by=None,
                approval=None,
            )
        )
    code, out = run("metrics", "--ledger", ledger.where, "--days", "1")
    assert code == 0, out
    assert "deployments: 4 (3 succeeded, 1 failed, 0 rolled back, 0 rejected; 0 unplanned)" in out
    assert "change fail rate: 25.0%  [low]" in out
    # failed at -9h, restored at -8h
    assert "failed deployment recovery time: median 1h 00m over 1 incident(s)  [high]" in out
    code, out = run("metrics", "--ledger", ledger.where, "--days", "1", "--format", "json")
    data = json.loads(out)
    assert (data["success"], data["levels"]["deployment_frequency"]) == (3, "elite")
    code, out = run("metrics", "--ledger", ledger.where, "--days", "1", "--format", "csv",
                    "--by", "service,environment")  # fmt: skip
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert (row["service"], row["environment"], row["total"]) == ("web", "staging", "4")
    assert row["change_fail_rate_level"] == "low" and row["rework_rate_level"] == ""
    code, out = run("metrics", "--ledger", ledger.where, "--days", "1", "--period", "0.25")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["period", "ending", "deploys"] and len(lines) == 5, out
    assert [line.split()[2] for line in lines[1:]] == ["0", "0", "4", "0"], out  # -10h..-7h


def test_the_ledger_commands_import_a_file_and_record_incidents(tmp_path: Path) -> None:
    from docker_delivery.ledger import Ledger

    db = str(tmp_path / "ledger.db")
    code, out = run("ledger", "upgrade", "--ledger", db)
    assert (code, out.strip()) == (0, f"{db}: schema version 0 -> 3")
    code, out = run("ledger", "import", str(tmp_path / "none.jsonl"), "--ledger", db)
    assert code == 1
    code, out = run("incident", "record", "web", "production", "--started", "2026-01-02T10:00",
                    "--title", "5xx", "--ledger", db)  # fmt: skip
    assert (code, out.strip()) == (0, f"recorded incident web-production-20260102T100000Z in {db}")
    code, out = run("incident", "end", "web-production-20260102T100000Z", "--at",
                    "2026-01-02T10:45Z", "--ledger", db)  # fmt: skip
    assert code == 0, out
    [incident] = Ledger(db).incidents()
    assert incident.ended_at is not None and incident.ended_at.minute == 45
    code, out = run("incident", "list", "--ledger", db)
    assert json.loads(out)["title"] == "5xx"
    code, out = run("incident", "record", "web", "production", "--started", "yesterday",
                    "--ledger", db)  # fmt: skip
    assert code == 2


def test_a_json_lines_ledger_is_refused_saying_how_to_import_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run("metrics", "--ledger", str(tmp_path / "old.jsonl"))
    assert code == 1
    assert "docker-delivery ledger import" in capsys.readouterr().err


def test_version_prints_the_providers_version(capsys: pytest.CaptureFixture[str]) -> None:
    from docker_delivery import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"docker-delivery {__version__}"


def test_plan_json_gives_every_task_with_its_place_and_policy() -> None:
    code, out = run("plan", "--json", str(ROOT / "dags/pipelines/two_envs.yaml"))
    assert code == 0, out
    plan = json.loads(out)
    assert plan["dag_id"] == "deliver_two_envs"
    assert [e["name"] for e in plan["environments"]] == ["staging", "production"]
    assert plan["environments"][1]["approval"] is True
    ids = [t["task_id"] for t in plan["tasks"]]
    assert ids[:2] == ["what_to_deliver", "build"] and "production.deploy" in ids
    deploy = next(t for t in plan["tasks"] if t["task_id"] == "production.deploy")
    assert deploy["environment"] == "production" and deploy["upstream"]
    assert all(set(t["upstream"]) <= set(ids) for t in plan["tasks"])
    assert all(ids.index(u) < ids.index(t["task_id"]) for t in plan["tasks"] for u in t["upstream"])


def test_schema_is_a_json_schema_the_examples_meet() -> None:
    """The schema validates each example pipeline (with its ${NAME:-default}s filled as the
    loader fills them), and refuses a misspelt key, as validate does."""
    import jsonschema
    import yaml

    from docker_delivery.templates.pipeline_spec.loading import _substitute

    code, out = run("schema")
    assert code == 0
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    examples = sorted((ROOT / "dags/pipelines").glob("*.yaml"))
    assert len(examples) >= 5
    for path in examples:
        data = _substitute(yaml.safe_load(path.read_text()), "", {}, [])
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(data)]
        assert errors == [], path.name
    broken = yaml.safe_load((ROOT / "dags/pipelines/two_envs.yaml").read_text())
    broken["pipeline"]["stagez"] = broken["pipeline"].pop("stages")
    assert not validator.is_valid(broken)


def test_history_lists_the_newest_deliveries_first(tmp_path: Path) -> None:
    import datetime as dt

    from docker_delivery.ledger import DeploymentRecord, Ledger

    ledger = Ledger(tmp_path / "ledger.db")
    start = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    for n in range(3):
        digest = "sha256:" + str(n + 1) * 64
        ledger.record(
            DeploymentRecord(
                service="web", environment="production" if n else "staging", digest=digest,
                previous_digest="sha256:" + str(n) * 64 if n else None,
                image=f"registry.example/web@{digest}",
                deployment_type="rollback" if n == 2 else "rolling",
                outcome="success", started_at=start, finished_at=start + dt.timedelta(hours=n),
                revision=None, committed_at=None, dag_id="deliver_web", run_id=f"run{n}",
                approved_by="ada" if n else None, approval="approved" if n else None,
            )
        )  # fmt: skip
    code, out = run("history", "--ledger", ledger.where)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["finished", "(UTC)", "service"]
    assert [line.split()[-1] for line in lines[1:]] == [
        "deliver_web/run2", "deliver_web/run1", "deliver_web/run0",
    ]  # fmt: skip
    assert "rollback (unplanned)" in lines[1] and "ada" in lines[1]
    assert "111111111111 -> 222222222222" in lines[2] and "none -> " in lines[3]
    code, out = run("history", "--ledger", ledger.where, "--environment", "production",
                    "--limit", "1", "--json")  # fmt: skip
    [only] = [json.loads(line) for line in out.splitlines()]
    assert only["run_id"] == "run2"
    code, out = run("history", "--ledger", str(tmp_path / "empty.db"))
    assert code == 0 and "no deliveries in" in out
    assert run("history", "--ledger", ledger.where, "--limit", "0")[0] == 2


def test_help_is_formatted_as_airflows_cli(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["metrics", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("Usage: docker-delivery metrics")  # rich-argparse's sections
    assert "Options:" in text and "--by {service,environment,service,environment}" in text


def test_the_shell_completes_commands_options_and_spec_files(tmp_path: Path) -> None:
    """As bash asks (argcomplete's protocol): the words come back for the line typed."""
    (tmp_path / "web.yaml").write_text("service: web\n")
    (tmp_path / "notes.txt").write_text("")

    def complete(line: str) -> list[str]:
        answer = tmp_path / "answer"
        env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n",
               "COMP_LINE": line, "COMP_POINT": str(len(line)),
               "_ARGCOMPLETE_STDOUT_FILENAME": str(answer)}  # fmt: skip
        done = subprocess.run([str(Path(sys.executable).parent / "docker-delivery")],
                              env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return sorted(w.strip() for w in answer.read_text().split("\n") if w.strip())

    assert complete("docker-delivery pl") == ["plan"]
    assert "--period" in complete("docker-delivery metrics --p")
    words = complete("docker-delivery validate ")
    assert "web.yaml" in words and "notes.txt" not in words


def test_continue_and_abort_say_what_they_need_before_calling_airflow(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the API server's address, or without a login, they stop at once (exit 2) saying
    what to set; a password is never taken from the command line."""
    for name in ("URL", "USER", "PASSWORD", "TOKEN"):
        monkeypatch.delenv(f"DOCKER_DELIVERY_AIRFLOW_{name}", raising=False)
    assert main(["continue", "web", "staging"], out=io.StringIO()) == 2
    assert "give --airflow-url (or set DOCKER_DELIVERY_AIRFLOW_URL)" in capsys.readouterr().err
    url = ["--airflow-url", "http://127.0.0.1:9"]
    assert main(["abort", "web", "staging", *url, "--user", "ada"], out=io.StringIO()) == 2
    assert "the password in DOCKER_DELIVERY_AIRFLOW_PASSWORD" in capsys.readouterr().err
    refused = main(["abort", "web", "staging", *url, "--password", "s3cret"], out=io.StringIO())
    assert refused == 2 and "unrecognized arguments: --password" in capsys.readouterr().err
