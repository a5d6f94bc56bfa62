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
