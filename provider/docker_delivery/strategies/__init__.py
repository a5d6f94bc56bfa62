"""The deployment types as settings that validate themselves and plans a runner executes.

The public names load lazily (PEP 562): ``from docker_delivery.strategies import BlueGreen``
works, while a DAG file that only needs MinimumInService does not import the blue/green
module (and httpx) while it is parsed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docker_delivery.strategies.ab import ABTest, ABTestAborted, StepEvent, ab_deploy
    from docker_delivery.strategies.base import DeployAborted, DeployResult, DeploySettingsInvalid
    from docker_delivery.strategies.bluegreen import (
        BlueGreen,
        RetireNotDue,
        SwitchAborted,
        deploy_idle,
        retire,
        switch_traffic,
    )
    from docker_delivery.strategies.deploy import deploy
    from docker_delivery.strategies.lock import DeploymentLock, DeploymentLocked
    from docker_delivery.strategies.min_in_service import MinimumInService
    from docker_delivery.strategies.rollback import RollbackImpossible, roll_back
    from docker_delivery.strategies.rolling import Rolling, RolloutPaused

_LAZY = {
    "ABTest": "docker_delivery.strategies.ab",
    "ABTestAborted": "docker_delivery.strategies.ab",
    "BlueGreen": "docker_delivery.strategies.bluegreen",
    "DeployAborted": "docker_delivery.strategies.base",
    "DeployResult": "docker_delivery.strategies.base",
    "DeploySettingsInvalid": "docker_delivery.strategies.base",
    "DeploymentLock": "docker_delivery.strategies.lock",
    "DeploymentLocked": "docker_delivery.strategies.lock",
    "MinimumInService": "docker_delivery.strategies.min_in_service",
    "RetireNotDue": "docker_delivery.strategies.bluegreen",
    "RollbackImpossible": "docker_delivery.strategies.rollback",
    "Rolling": "docker_delivery.strategies.rolling",
    "RolloutPaused": "docker_delivery.strategies.rolling",
    "StepEvent": "docker_delivery.strategies.ab",
    "SwitchAborted": "docker_delivery.strategies.bluegreen",
    "ab_deploy": "docker_delivery.strategies.ab",
    "deploy": "docker_delivery.strategies.deploy",
    "deploy_idle": "docker_delivery.strategies.bluegreen",
    "retire": "docker_delivery.strategies.bluegreen",
    "roll_back": "docker_delivery.strategies.rollback",
    "switch_traffic": "docker_delivery.strategies.bluegreen",
}

__all__ = [
    "ABTest",
    "ABTestAborted",
    "BlueGreen",
    "DeployAborted",
    "DeployResult",
    "DeploySettingsInvalid",
    "DeploymentLock",
    "DeploymentLocked",
    "MinimumInService",
    "RetireNotDue",
    "RollbackImpossible",
    "Rolling",
    "RolloutPaused",
    "StepEvent",
    "SwitchAborted",
    "ab_deploy",
    "deploy",
    "deploy_idle",
    "retire",
    "roll_back",
    "switch_traffic",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
