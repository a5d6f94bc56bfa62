"""The provider is registered with Airflow through its entry point (seen by ProvidersManager)."""

from __future__ import annotations

import pytest
from airflow.providers_manager import ProvidersManager

PACKAGE = "airflow-provider-docker-delivery"


def test_providers_manager_lists_the_provider() -> None:
    providers = ProvidersManager().providers
    assert PACKAGE in providers
    info = providers[PACKAGE]
    assert info.version == info.data["versions"][0]
    assert info.data["name"] == "Docker Delivery"


def test_listed_modules_import() -> None:
    import importlib

    data = ProvidersManager().providers[PACKAGE].data
    modules = [
        m
        for kind in ("operators", "hooks", "sensors", "triggers")
        for entry in data.get(kind, [])
        for m in entry["python-modules"]
    ]
    assert "docker_delivery.operators.build" in modules
    for module in modules:
        importlib.import_module(module)


def test_haproxy_connection_type_is_registered() -> None:
    hooks = ProvidersManager().hooks
    assert "haproxy" in hooks
    assert hooks["haproxy"].hook_class_name == "docker_delivery.hooks.haproxy.HaproxyHook"


def test_connection_forms_show_through_airflows_hook_metadata() -> None:
    """What the connection form of Airflow 3.3 reads: the provider's info, not the hooks."""
    manager = ProvidersManager()
    behaviours = manager.field_behaviours
    assert behaviours["haproxy"]["hidden_fields"] == ["schema", "login", "password", "extra"]
    assert behaviours["haproxy"]["relabeling"]["host"] == "Runtime API host"
    assert behaviours["docker_engine"]["hidden_fields"] == ["schema", "password"]
    widgets = manager.connection_form_widgets
    key = widgets["extra__docker_engine__tls_key"]
    assert key.is_sensitive and key.field["schema"]["title"] == "Client key (PEM)"
    assert not widgets["extra__docker_engine__tls_ca"].is_sensitive
    hooks = manager.hooks
    assert hooks["haproxy"].connection_type == "haproxy"
    assert hooks["docker_engine"].hook_name == "Docker Engine"


def test_the_plugin_and_the_options_are_declared() -> None:
    data = ProvidersManager().providers[PACKAGE].data
    assert data["plugins"] == [
        {
            "name": "docker_delivery",
            "plugin-class": "docker_delivery.plugins.deliveries.DeliveriesPlugin",
        }
    ]
    assert set(data["config"]["docker_delivery"]["options"]) == {"ledger", "ledger_conn_id"}
    from docker_delivery.hooks.haproxy import HaproxyHook

    assert HaproxyHook.get_ui_field_behaviour()["hidden_fields"] == [
        "schema",
        "login",
        "password",
        "extra",
    ]


def test_delivery_tasks_show_the_service_the_image_and_the_delivery_as_extra_links(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The links are registered with Airflow (a serialized DAG keeps them), and each says where
    to look: the URL the deploy returned, the image in its registry, the run's delivery in the
    Deliveries view."""
    from types import SimpleNamespace

    from airflow.serialization.serialized_objects import DagSerialization

    from docker_delivery.operators import links
    from docker_delivery.operators.deploy import MinimumInServiceDeployOperator
    from docker_delivery.templates import delivery_pipeline

    names = set(ProvidersManager().extra_links_class_names)
    assert {f"docker_delivery.operators.links.{n}" for n in links.__all__} <= names
    spec = {
        "service": "web",
        "image": "127.0.0.1:5000/dd/web",
        "environments": {"staging": {"router": {"port": 18080}}},
        "pipeline": {
            "mode": "continuous_deployment",
            "stages": [{"environment": "staging", "deploy": {"type": "min_in_service"}}],
        },
    }
    dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(delivery_pipeline(spec)))
    shown = {t: sorted(dag.get_task(t).extra_links) for t in ("build", "staging.deploy")}
    assert shown == {"build": ["Image"], "staging.deploy": ["Delivery", "Image", "Service"]}
    digest = "sha256:" + "ab" * 32
    deploy = MinimumInServiceDeployOperator(
        task_id="d", service="web", environment="staging",
        image=f"127.0.0.1:5000/dd/web@{digest}", router_port=18080,
    )  # fmt: skip
    key = SimpleNamespace(dag_id="deliver_web", run_id="manual__1", task_id="d")
    returned = {"url": "http://10.0.0.5:18080/", "digest": digest}
    monkeypatch.setattr(links, "_returned", lambda ti_key: returned)  # the task's XCom
    got = {link.name: link.get_link(deploy, ti_key=key) for link in deploy.operator_extra_links}
    assert got == {
        "Service": "http://10.0.0.5:18080/",
        "Image": f"http://127.0.0.1:5000/v2/dd/web/manifests/{digest}",
        "Delivery": "/docker-delivery/deliveries?dag_id=deliver_web&run_id=manual__1",
    }
