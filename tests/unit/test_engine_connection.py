"""The ``docker_engine`` connection: how an environment names a remote engine, and what a delivery
DAG makes of it (the engine's connection on every task of the environment, the routers' URLs on
the engine's host)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from docker_delivery.errors import TargetError
from docker_delivery.hooks.engine import DockerEngineHook, engine_client, engine_host
from docker_delivery.routing.service import RouterSettings


def _conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "docker_engine", **fields})
    )


@pytest.mark.parametrize(
    ("url", "host"),
    [
        (None, "localhost"),
        ("unix:///var/run/docker.sock", "localhost"),
        ("tcp://10.20.0.2:2376", "10.20.0.2"),
        ("https://10.20.0.2:2376", "10.20.0.2"),
        ("ssh://deploy@engine.example", "engine.example"),
        ("10.20.0.2", "10.20.0.2"),
    ],
)
def test_the_engine_host_is_where_published_ports_are_reached(url: str | None, host: str) -> None:
    assert engine_host(url) == host


def test_router_urls_follow_the_engine_host_the_bound_address_or_the_spec() -> None:
    every = RouterSettings(port=8080, preview_port=8081)
    assert every.url("10.20.0.2") == "http://10.20.0.2:8080/"
    assert every.preview("10.20.0.2") == "http://10.20.0.2:8081/"
    bound = RouterSettings(port=8080, address="10.30.0.7")
    assert bound.url("10.20.0.2") == "http://10.30.0.7:8080/" and bound.preview("x") is None
    given = RouterSettings(port=8080, public_url="https://shop.example/", address="::")
    assert given.url("10.20.0.2") == "https://shop.example/"
    assert RouterSettings(port=80, address="fd00::5").url("h") == "http://[fd00::5]:80/"


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({"host": "10.20.0.2"}, "https://10.20.0.2:2376"),
        ({"host": "tcp://10.20.0.2", "port": 12376}, "https://10.20.0.2:12376"),
        ({"host": "ssh://engine.example", "login": "deploy"}, "ssh://deploy@engine.example"),
        ({"host": "unix:///run/docker.sock"}, "unix:///run/docker.sock"),
    ],
)
def test_a_connection_names_its_engine(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], url: str
) -> None:
    _conn(monkeypatch, "dd_engine_t", **fields)
    assert DockerEngineHook("dd_engine_t").base_url() == url


def test_an_engine_on_tcp_without_tls_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _conn(monkeypatch, "dd_engine_plain", host="10.20.0.2", extra={"tls_ca": "x"})
    with pytest.raises(
        TargetError, match="needs mutual TLS; the extras tls_cert, tls_key are empty"
    ):
        engine_client(engine_conn_id="dd_engine_plain")
    _conn(monkeypatch, "dd_engine_bad", host="ftp://10.20.0.2")
    with pytest.raises(TargetError, match="neither an address"):
        engine_client(engine_conn_id="dd_engine_bad")


def test_the_pem_files_live_as_long_as_the_client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(tmp_path / "cert.pem"),
            "-days",
            "1",
            "-subj",
            "/CN=test",
        ],
        check=True,
        capture_output=True,
    )
    cert = (tmp_path / "cert.pem").read_text()
    extra = {"tls_ca": cert, "tls_cert": cert, "tls_key": key.read_text()}
    _conn(monkeypatch, "dd_engine_tls", host="127.0.0.1", port=1, extra=extra)
    client = DockerEngineHook("dd_engine_tls").get_client(version="1.45")  # connects to nothing
    try:
        assert client.api.base_url == "https://127.0.0.1:1"
        ca = Path(client.api.verify)
        folder = ca.parent
        assert ca.read_text().strip() == cert.strip()
        assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
        assert all(oct(os.stat(p).st_mode & 0o777) == "0o600" for p in folder.iterdir())
    finally:
        client.close()
    assert not folder.exists()


def test_a_pipeline_environment_on_a_remote_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every task of the environment reaches its engine through the connection; the checks and
    the smoke tests call the router on the engine's host, read from the connection at run time."""
    from docker_delivery.templates import delivery_pipeline
    from docker_delivery.templates.runtime import engine_host_of

    root = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((root / "dags" / "pipelines" / "two_envs.yaml").read_text())
    data["pipeline"]["build"]["context"] = str(root / "dags" / "demo_app")
    data["environments"]["production"]["engine"] = "dd_remote_prod"
    data["pipeline"]["engine"] = "dd_builder"  # builds the image and runs its tests
    data["pipeline"]["stages"][1]["verify"]["smoke"].append({"name": "cmd", "command": ["true"]})
    dag = delivery_pipeline(data)
    for task_id in ("production.deploy", "production.switch", "production.promote"):
        assert dag.get_task(task_id).engine_conn_id == "dd_remote_prod", task_id
    assert dag.get_task("production.smoke_cmd").engine_conn_id == "dd_remote_prod"
    for task_id in ("build", "test_unit", "test_smoke"):
        assert dag.get_task(task_id).engine_conn_id == "dd_builder", task_id
    assert dag.get_task("staging.deploy").engine_conn_id is None
    preview: Any = dag.get_task("production.verify_preview")
    assert preview.addresses == "{{ engine_host('dd_remote_prod') }}:18183"
    smoke: Any = dag.get_task("production.smoke_version")
    assert smoke.op_kwargs["url"] == "http://{{ engine_host('dd_remote_prod') }}:18182/version"
    assert dag.user_defined_macros["engine_host"] is engine_host_of
    from docker_delivery.templates.pipeline_spec import load_pipeline
    from docker_delivery.templates.plan import describe_plan

    assert "http://<host of dd_remote_prod>:18182/" in describe_plan(load_pipeline(data))
    _conn(monkeypatch, "dd_remote_prod", host="tcp://10.20.0.2")
    assert engine_host_of("dd_remote_prod") == "10.20.0.2"


@pytest.mark.parametrize(
    ("swarm_nodes", "error"),
    [
        ("{not json", "extra swarm_nodes: not JSON"),
        (["10.0.0.6"], "must map each node"),
        ({"10.0.0.6": ""}, "must map each node"),
        ({"10.0.0.6": "dd_mgr"}, "names the manager's own connection"),
    ],
)
def test_bad_swarm_nodes_are_refused_before_any_client(
    monkeypatch: pytest.MonkeyPatch, swarm_nodes: Any, error: str
) -> None:
    _conn(monkeypatch, "dd_mgr", host="unix:///nowhere.sock", extra={"swarm_nodes": swarm_nodes})
    with pytest.raises(TargetError, match=error):
        engine_client(engine_conn_id="dd_mgr")


def test_swarm_nodes_name_each_nodes_engine_made_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from docker_delivery.targets.nodes import NodeEngines, attach_nodes, nodes_of

    nodes = {"10.0.0.6": "dd_node2", "node-3": "dd_node3"}
    _conn(monkeypatch, "dd_mgr", host="unix:///nowhere.sock", extra={"swarm_nodes": nodes})
    engines = DockerEngineHook("dd_mgr").node_engines()
    assert engines is not None and engines.keys == ["10.0.0.6", "node-3"]
    by_addr = {"ID": "n2", "Status": {"Addr": "10.0.0.6"}, "Description": {"Hostname": "h"}}
    by_name = {"ID": "n3", "Status": {"Addr": "10.0.0.7"}, "Description": {"Hostname": "node-3"}}
    other = {"ID": "n4", "Status": {"Addr": "10.0.0.8"}, "Description": {"Hostname": "h"}}
    assert [engines.key_for(n) for n in (by_addr, by_name, other)] == ["10.0.0.6", "node-3", None]
    # Each node's client is made on first use, once, and closed with the manager's.
    _conn(monkeypatch, "dd_node2", host="10.0.0.6")  # TLS without its PEM texts: refused
    with pytest.raises(TargetError, match="'dd_node2': an engine on tcp needs mutual TLS"):
        engines.client("10.0.0.6")

    class Client:
        closed = 0

        def close(self) -> None:
            Client.closed += 1

    made: list[Client] = []
    fake = NodeEngines({"10.0.0.6": lambda: made.append(Client()) or made[-1]})
    manager = attach_nodes(Client(), fake)  # type: ignore[arg-type]
    assert nodes_of(manager) is fake  # type: ignore[arg-type]
    assert fake.client("10.0.0.6") is fake.client("10.0.0.6") and len(made) == 1
    manager.close()
    assert Client.closed == 2  # the node's and the manager's
