"""The public names and the import paths users write (shared/DESIGN.md, "Names") keep working,
and so do the paths of the modules that became packages of one concept each."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "docker_delivery.operators.build": ["BuildImageOperator"],
    "docker_delivery.operators.test": ["TestImageOperator"],
    "docker_delivery.operators.promote": ["PromoteImageOperator"],
    "docker_delivery.operators.infra": ["ApplyInfraOperator"],
    "docker_delivery.operators.migrate": ["MigrateDatabaseOperator"],
    "docker_delivery.operators.deploy": [
        "MinimumInServiceDeployOperator",
        "RollingDeployOperator",
        "BlueGreenDeployOperator",
        "SwitchTrafficOperator",
        "RetireOperator",
        "ABDeployOperator",
        "RollbackOperator",
    ],
    "docker_delivery.sensors": ["ServiceHealthySensor", "RolloutCompleteSensor"],
    "docker_delivery.templates": ["delivery_pipeline"],
    "docker_delivery.targets": ["EngineTarget", "SwarmTarget", "EcsTarget"],
    "docker_delivery.routing": ["HaproxyRouter", "AlbRouter", "Route53Router"],
    "docker_delivery.health": ["HealthCheck"],
    "docker_delivery.images.registry": ["RegistryClient"],
    "docker_delivery.images.ref": ["ImageRef"],
    "docker_delivery.ledger": ["Ledger", "DeploymentRecord"],
    # Modules split into packages re-export what they held.
    "docker_delivery.routing.haproxy": ["HaproxyRouter", "render_config", "BackendStats"],
    "docker_delivery.images.registry.client": ["RegistryClient"],
    "docker_delivery.infra": ["plan", "apply_spec", "drift", "strategy_for"],
    "docker_delivery.migrations": ["MigrationRunner", "MigrationSpec", "Database", "parse_status"],
    "docker_delivery.images.testing": ["ImageTestRunner", "ImageTest", "Sidecar", "parse_junit"],
    "docker_delivery.templates.pipeline_spec": ["PipelineSpec", "StageSpec", "load_pipeline"],
    "docker_delivery.strategies.bluegreen": ["deploy_idle", "switch_traffic", "retire", "Wiring"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_the_public_names_import(module: str) -> None:
    found = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(found, name)]
    assert not missing, f"{module} no longer has {missing}"
