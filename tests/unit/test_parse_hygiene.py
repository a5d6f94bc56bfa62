"""Parsing a DAG file made from a pipeline spec is cheap and has no side effects.

Airflow parses every DAG file again and again (the DAG processor, every worker before a task):
a pipeline's DAG file must not import docker, boto3 or httpx at module level (they load when a
task runs), and must touch no network and no database while it is parsed.

``airflow.sdk`` itself imports httpx, so what counts is what a DAG file loads *after*
``import airflow.sdk``; and, statically, that no module of ours a DAG file loads imports docker,
boto3, botocore, httpx or requests at module level.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from kit.pipeline import pipeline_dag_file

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
PIPELINE_DAGS = sorted(p for p in DAGS.glob("*.py") if "delivery_pipeline(" in p.read_text())
HEAVY = ("docker", "boto3", "botocore", "httpx", "requests")

# Run in a fresh interpreter: airflow.sdk first (as in the DAG processor), then guards that turn
# any network, database or subprocess use into an error, then the DAG file, as Airflow imports it.
PARSE = r"""
import importlib.util, json, socket, sqlite3, subprocess, sys
import pendulum
import airflow.sdk
from airflow.sdk import DAG, Asset, Param

# What any DAG file costs (Airflow's own lazy imports: timetables, croniter, assets) is paid by
# plain DAGs first; what is measured below is what the pipeline's file adds.
for schedule in ("@daily", [Asset("warm-up")], None):
    with DAG("warm_up", schedule=schedule, start_date=pendulum.datetime(2025, 1, 1),
             params={"p": Param("", type="string")}):
        pass

path = sys.argv[1]
before = set(sys.modules)
touched = []

def refuse(what):
    def guard(*args, **kwargs):
        touched.append(what)
        raise RuntimeError(f"{what} while parsing a DAG file")
    return guard

socket.socket.connect = refuse("socket.connect")
socket.socket.connect_ex = refuse("socket.connect_ex")
socket.create_connection = refuse("socket.create_connection")
socket.getaddrinfo = refuse("socket.getaddrinfo")
sqlite3.connect = refuse("sqlite3.connect")
subprocess.Popen.__init__ = refuse("subprocess")
try:
    import sqlalchemy.engine
    sqlalchemy.engine.Engine.connect = refuse("database (sqlalchemy)")
    sqlalchemy.engine.Engine.raw_connection = refuse("database (sqlalchemy)")
except ImportError:
    pass

spec = importlib.util.spec_from_file_location("dag_under_test", path)
module = importlib.util.module_from_spec(spec)
error = None
try:
    spec.loader.exec_module(module)
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
dags = [v.dag_id for v in vars(module).values() if isinstance(v, DAG)]
print(json.dumps({
    "dags": dags,
    "error": error,
    "touched": touched,
    "new": sorted(set(sys.modules) - before),
}))
"""


@cache
def parse(path: Path) -> dict[str, Any]:
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run(
        [sys.executable, "-c", PARSE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@cache
def migrating_dag() -> Path:
    """A pipeline DAG file whose spec migrates a database (no example does)."""
    folder = Path(tempfile.mkdtemp(prefix="dd-hygiene-"))
    data = yaml.safe_load((DAGS / "pipelines" / "min_in_service.yaml").read_text())
    data["pipeline"]["build"]["context"] = str(DAGS / "demo_app")
    data["pipeline"]["migrations"] = {"database_conn_id": "demo_db"}
    dag = pipeline_dag_file(folder, "migrating", data)
    return dag


def loaded(path: Path, roots: tuple[str, ...]) -> list[str]:
    return sorted({m.split(".")[0] for m in parse(path)["new"] if m.split(".")[0] in roots})


def test_the_examples_are_pipeline_dags() -> None:
    assert len(PIPELINE_DAGS) >= 5


@pytest.mark.parametrize("path", PIPELINE_DAGS, ids=lambda p: p.stem)
def test_parsing_touches_no_network_database_or_subprocess(path: Path) -> None:
    result = parse(path)
    assert result["error"] is None, result["error"]
    assert result["dags"], "the file defines a DAG"
    assert result["touched"] == []


@pytest.mark.parametrize("path", PIPELINE_DAGS, ids=lambda p: p.stem)
def test_parsing_imports_no_docker_client(path: Path) -> None:
    assert loaded(path, ("docker", "httpx")) == []


# The promotion's Asset URI (operators.promote.image_asset) uses the scheme x-oci://: Airflow
# skips the providers' asset URI handlers for a scheme starting with "x-" (with oci:// it loaded
# them all while the DAG was built, and amazon's S3 handler imports boto3, botocore, requests).
@pytest.mark.parametrize("path", PIPELINE_DAGS, ids=lambda p: p.stem)
def test_parsing_imports_no_boto3(path: Path) -> None:
    assert loaded(path, ("boto3", "botocore", "requests")) == []


def test_a_pipeline_that_migrates_imports_no_docker_while_parsing() -> None:
    result = parse(migrating_dag())
    assert result["error"] is None, result["error"]
    assert result["dags"] == ["deliver_min_in_service"]
    assert loaded(migrating_dag(), ("docker",)) == []


def _top_level_imports(source: str) -> set[str]:
    """Modules imported when the module is imported: module-level statements, including inside
    try/if blocks at module level, but not under ``if TYPE_CHECKING``."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if "TYPE_CHECKING" not in test:
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(ast.parse(source).body)
    return found


# Modules of ours that still import one of HEAVY at module level, with what to do about it.
# Each entry is an expected failure (strict: when the module is fixed, the test says to remove
# the entry). None is in templates/ or in the operators: the pipeline's own files are clean.
KNOWN: dict[str, str] = {}  # module -> why it may (strict xfail); none now


def _our_modules() -> list[str]:
    loaded = {m for p in [*PIPELINE_DAGS, migrating_dag()] for m in parse(p)["new"]}
    return sorted(m for m in loaded if m == "docker_delivery" or m.startswith("docker_delivery."))


def _cases() -> list[Any]:
    # Which modules a pipeline DAG file loads is what the test is about; the list is read from
    # the sources here so that the parametrization does not need a subprocess at collection.
    package = ROOT / "provider" / "docker_delivery"
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return [
        pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN[n], strict=True) if n in KNOWN else ())
        for n in names
    ]


@pytest.mark.parametrize("module", _cases())
def test_no_module_a_dag_file_loads_imports_heavy_clients_at_module_level(module: str) -> None:
    if module not in _our_modules():
        return  # not loaded while parsing a pipeline DAG file: nothing to check
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    imports = _top_level_imports(Path(spec.origin).read_text())
    heavy = sorted(i for i in imports if i.split(".")[0] in HEAVY)
    assert heavy == [], f"{module} imports {heavy} at module level"


def test_the_templates_package_imports_no_airflow_for_the_cli() -> None:
    """`docker-delivery validate` and `plan` load the spec and the plan without Airflow."""
    code = (
        "import sys\n"
        "from docker_delivery.templates.plan import describe_plan\n"
        "from docker_delivery.templates.pipeline_spec import load_pipeline\n"
        "import docker_delivery.cli\n"
        f"describe_plan(load_pipeline({str(DAGS / 'pipelines' / 'two_envs.yaml')!r}))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'airflow', 'docker', 'httpx', 'boto3', 'requests'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().replace("'", '"')) == []
