"""The deployment types as settings that validate themselves and plans a runner executes."""

from docker_delivery.strategies.base import DeployAborted, DeployResult, DeploySettingsInvalid
from docker_delivery.strategies.deploy import deploy
from docker_delivery.strategies.lock import DeploymentLock, DeploymentLocked
from docker_delivery.strategies.min_in_service import MinimumInService
from docker_delivery.strategies.rolling import Rolling, RolloutPaused

__all__ = [
    "DeployAborted",
    "DeployResult",
    "DeploySettingsInvalid",
    "DeploymentLock",
    "DeploymentLocked",
    "MinimumInService",
    "Rolling",
    "RolloutPaused",
    "deploy",
]
