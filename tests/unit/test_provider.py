"""The provider is registered with Airflow through its entry point (seen by ProvidersManager)."""

from __future__ import annotations

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
