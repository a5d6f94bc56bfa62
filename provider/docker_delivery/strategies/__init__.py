"""The deployment types as settings that validate themselves and plans a runner executes."""

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
