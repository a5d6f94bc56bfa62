"""EcsTarget: releases on Amazon ECS. A release is a task definition revision (the image by
digest, environment variables passed at run time, secrets by Secrets Manager or SSM ARN,
limits, the container's health check); a service runs it with a deployment configuration
(minimum healthy / maximum percent, the deployment circuit breaker, CloudWatch alarms).

What runs is read from ECS, like the inventory on Docker: the service's task definition, its
deployments (status, rollout state, running and failed tasks) and its tags
(``io.docker-delivery.*``, as the labels on Docker). Each step looks first: a task definition
identical to the release's newest revision is reused, a service already on the release with its
deployment completed is left alone, so a retried task does only what is missing.

Minimum in-service maps to the deployment configuration (:func:`deployment_configuration`);
:meth:`EcsTarget.wait` then follows the deployment until ECS says COMPLETED, stops at FAILED
(the circuit breaker tripped: ECS rolls back by itself when ``rollback`` is on) and, while it
waits, reads the deployment's CloudWatch alarms: one in ALARM aborts it. Rolling moves task
sets of a service with the EXTERNAL deployment controller (one per release, its external id
the digest), stage by stage (:meth:`EcsTarget.scale_task_set`).

This module is domain code: it never imports Airflow; boto3 clients come in from the hooks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from docker_delivery.awsapi import call
from docker_delivery.errors import DeployAborted, TargetError
from docker_delivery.images.ref import ImageRef
from docker_delivery.targets.labels import (
    LABEL_COLOUR,
    LABEL_DIGEST,
    LABEL_ENVIRONMENT,
    LABEL_SERVICE,
)


@dataclass(frozen=True)
class EcsHealthCheck:
    """The container's health check, run by ECS in the task (``CMD-SHELL`` when a string)."""

    command: Sequence[str] | str
    interval: int = 10
    timeout: int = 5
    retries: int = 3
    start_period: int = 0

    def as_api(self) -> dict[str, Any]:
        command = (
            ["CMD-SHELL", self.command] if isinstance(self.command, str) else list(self.command)
        )
        return {
            "command": command,
            "interval": self.interval,
            "timeout": self.timeout,
            "retries": self.retries,
            "startPeriod": self.start_period,
        }


@dataclass(frozen=True)
class EcsRelease:
    """One release of a service in an environment (in one colour, for blue/green and A/B)."""

    service: str
    environment: str
    image: str  # pinned by digest ("" for a step that releases nothing: a switch back)
    port: int = 8080
    environment_vars: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)  # name -> Secrets Manager/SSM ARN
    cpu: int = 256
    memory: int = 512
    health_check: EcsHealthCheck | None = None
    colour: str | None = None
    execution_role_arn: str | None = None

    def __post_init__(self) -> None:
        if self.image:
            ImageRef.parse(self.image).require_pinned()

    @property
    def name(self) -> str:
        """The ECS service and task definition family."""
        parts = [self.service, self.environment, *([self.colour] if self.colour else [])]
        return "-".join(parts)

    @property
    def digest(self) -> str:
        return str(ImageRef.parse(self.image).digest) if self.image else ""

    def tags(self) -> dict[str, str]:
        tags = {
            LABEL_SERVICE: self.service,
            LABEL_ENVIRONMENT: self.environment,
            LABEL_DIGEST: self.digest,
        }
        if self.colour:
            tags[LABEL_COLOUR] = self.colour
        return tags

    def container(self) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": "app",
            "image": self.image,
            "essential": True,
            "cpu": self.cpu,  # the task's size, also the container's limits (one container)
            "memory": self.memory,
            "portMappings": [{"containerPort": self.port, "protocol": "tcp"}],
            "environment": [
                {"name": k, "value": v} for k, v in sorted(self.environment_vars.items())
            ],
            "secrets": [{"name": k, "valueFrom": v} for k, v in sorted(self.secrets.items())],
        }
        if self.health_check is not None:
            container["healthCheck"] = self.health_check.as_api()
        return container


@dataclass(frozen=True)
class EcsDeploymentSettings:
    """The service's deployment configuration."""

    minimum_healthy_percent: int = 100
    maximum_percent: int = 200
    circuit_breaker: bool = True
    rollback: bool = True
    alarms: tuple[str, ...] = ()

    def as_api(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "minimumHealthyPercent": self.minimum_healthy_percent,
            "maximumPercent": self.maximum_percent,
            "deploymentCircuitBreaker": {"enable": self.circuit_breaker, "rollback": self.rollback},
        }
        if self.alarms:
            config["alarms"] = {
                "alarmNames": list(self.alarms),
                "enable": True,
                "rollback": self.rollback,
            }
        return config


def deployment_configuration(
    kind: str,
    replicas: int,
    *,
    keep: int | None = None,
    batch: int = 1,
    alarms: Sequence[str] = (),
) -> EcsDeploymentSettings:
    """Minimum in-service (``keep`` of ``replicas`` serve throughout, the rest replaced in
    place: no extra capacity) or rolling (``batch`` new tasks at a time beside the old ones:
    none of the old ones leaves before its replacement is healthy) as ECS's percentages."""
    if replicas < 1:
        raise TargetError(f"an ECS service needs at least 1 replica, not {replicas}")
    if kind == "min_in_service":
        kept = replicas // 2 if keep is None else keep
        return EcsDeploymentSettings(
            minimum_healthy_percent=math.ceil(100 * kept / replicas),
            maximum_percent=100,
            alarms=tuple(alarms),
        )
    if kind == "rolling":
        return EcsDeploymentSettings(
            minimum_healthy_percent=100,
            maximum_percent=100 + math.ceil(100 * max(1, batch) / replicas),
            alarms=tuple(alarms),
        )
    raise TargetError(f"no ECS deployment configuration for {kind!r}")


@dataclass(frozen=True)
class EcsDeployment:
    """One of a service's deployments, as ECS reports it."""

    id: str
    status: str  # PRIMARY, ACTIVE, INACTIVE
    rollout_state: str  # IN_PROGRESS, COMPLETED, FAILED
    reason: str
    task_definition: str
    desired: int
    running: int
    failed: int


@dataclass(frozen=True)
class EcsService:
    """A service as ECS reports it."""

    name: str
    status: str
    task_definition: str
    desired: int
    running: int
    deployments: tuple[EcsDeployment, ...]
    tags: Mapping[str, str]
    deployment_configuration: Mapping[str, Any]
    controller: str = "ECS"  # EXTERNAL: its tasks are in task sets (a rolling deployment's)

    @property
    def primary(self) -> EcsDeployment | None:
        return next((d for d in self.deployments if d.status == "PRIMARY"), None)

    @property
    def digest(self) -> str | None:
        return self.tags.get(LABEL_DIGEST)


@dataclass(frozen=True)
class EcsTaskSet:
    """A task set of a service with the EXTERNAL deployment controller: one release's tasks,
    ``scale`` percent of the service's desired count. ``external_id`` is the release's digest."""

    id: str
    arn: str
    external_id: str
    task_definition: str
    scale: float
    status: str  # PRIMARY, ACTIVE, DRAINING
    stability: str  # STEADY_STATE, STABILIZING
    running: int
    desired: int


class EcsTarget:
    """Services of one ECS cluster. ``ecs`` and ``cloudwatch`` are boto3 clients."""

    def __init__(
        self,
        ecs: Any,
        cluster: str,
        *,
        cloudwatch: Any = None,
        launch_type: str = "FARGATE",
        network: Mapping[str, Any] | None = None,
        log: Callable[[str], None] = print,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ecs = ecs
        self.cluster = cluster
        self.cloudwatch = cloudwatch
        self.launch_type = launch_type
        self.network = dict(network) if network else None
        self.log = log
        self.sleep = sleep
        self.clock = clock

    def _call(self, operation: str, doing: str, **params: Any) -> Any:
        return call(
            self.ecs, operation, f"ECS cluster {self.cluster}: {doing}", TargetError, **params
        )

    # -- task definitions ------------------------------------------------------------------------

    def register(self, release: EcsRelease) -> str:
        """The task definition ARN of ``release``: its family's newest revision when that is
        the same release (a retry), else a new revision."""
        if not release.image:
            raise TargetError(f"{release.name}: no image to release")
        wanted = release.container()
        try:
            latest = self.ecs.describe_task_definition(taskDefinition=release.name)
            current = latest["taskDefinition"]
            same = (
                current.get("containerDefinitions", [{}])[0].get("image") == wanted["image"]
                and _subset(wanted, current["containerDefinitions"][0])
                and str(current.get("cpu")) == str(release.cpu)
                and str(current.get("memory")) == str(release.memory)
            )
            if same:
                self.log(f"task definition {current['taskDefinitionArn']} is this release")
                return str(current["taskDefinitionArn"])
        except Exception:  # no revision yet (ClientError), or a shape of its own: register
            pass
        params: dict[str, Any] = {
            "family": release.name,
            "containerDefinitions": [wanted],
            "cpu": str(release.cpu),
            "memory": str(release.memory),
            "requiresCompatibilities": [self.launch_type],
            "networkMode": "awsvpc",
            "tags": [{"key": k, "value": v} for k, v in release.tags().items()],
        }
        if release.execution_role_arn:
            params["executionRoleArn"] = release.execution_role_arn
        found = self._call("register_task_definition", f"registering {release.name}", **params)
        arn = str(found["taskDefinition"]["taskDefinitionArn"])
        self.log(f"registered {arn}: {release.image}")
        return arn

    def task_definition(self, arn: str) -> dict[str, Any]:
        found = self._call("describe_task_definition", f"reading {arn}", taskDefinition=arn)
        return dict(found["taskDefinition"])

    # -- services --------------------------------------------------------------------------------

    def service(self, name: str) -> EcsService | None:
        """The service ``name`` as ECS reports it; None when there is none (or it is inactive)."""
        found = self._call(
            "describe_services",
            f"reading service {name}",
            cluster=self.cluster,
            services=[name],
            include=["TAGS"],
        )
        services = [s for s in found.get("services") or [] if s.get("status") != "INACTIVE"]
        if not services:
            return None
        s = services[0]
        return EcsService(
            name=s["serviceName"],
            status=s["status"],
            task_definition=s.get("taskDefinition", ""),
            desired=int(s.get("desiredCount", 0)),
            running=int(s.get("runningCount", 0)),
            deployments=tuple(
                EcsDeployment(
                    id=d["id"],
                    status=d.get("status", ""),
                    rollout_state=d.get("rolloutState", ""),
                    reason=d.get("rolloutStateReason", ""),
                    task_definition=d.get("taskDefinition", ""),
                    desired=int(d.get("desiredCount", 0)),
                    running=int(d.get("runningCount", 0)),
                    failed=int(d.get("failedTasks", 0)),
                )
                for d in s.get("deployments") or []
            ),
            tags={t["key"]: t["value"] for t in s.get("tags") or []},
            deployment_configuration=s.get("deploymentConfiguration") or {},
            controller=(s.get("deploymentController") or {}).get("type", "ECS"),
        )

    def apply(
        self,
        release: EcsRelease,
        replicas: int,
        settings: EcsDeploymentSettings,
        *,
        target_group_arn: str | None = None,
    ) -> EcsService:
        """Run ``release`` with ``replicas`` tasks: create the service, or update it to the
        release's task definition (nothing when it already runs it). Returns what ECS reports."""
        task_definition = self.register(release)
        current = self.service(release.name)
        if current is None:
            params: dict[str, Any] = {
                "cluster": self.cluster,
                "serviceName": release.name,
                "taskDefinition": task_definition,
                "desiredCount": replicas,
                "launchType": self.launch_type,
                "deploymentConfiguration": settings.as_api(),
                "tags": [{"key": k, "value": v} for k, v in release.tags().items()],
                "propagateTags": "SERVICE",
            }
            if self.network:
                params["networkConfiguration"] = {"awsvpcConfiguration": self.network}
            if target_group_arn:
                params["loadBalancers"] = [
                    {
                        "targetGroupArn": target_group_arn,
                        "containerName": "app",
                        "containerPort": release.port,
                    }
                ]
            self._call("create_service", f"creating service {release.name}", **params)
            self.log(f"created service {release.name}: {replicas} x {release.image}")
        elif current.task_definition == task_definition and current.desired == replicas:
            self.log(f"service {release.name} already runs {task_definition}")
        else:
            self._call(
                "update_service",
                f"updating service {release.name}",
                cluster=self.cluster,
                service=release.name,
                taskDefinition=task_definition,
                desiredCount=replicas,
                deploymentConfiguration=settings.as_api(),
            )
            self._tag(release.name, release.tags())
            self.log(
                f"updated service {release.name}: {current.task_definition} -> "
                f"{task_definition}, {replicas} tasks"
            )
        found = self.service(release.name)
        assert found is not None
        return found

    def _tag(self, name: str, tags: Mapping[str, str]) -> None:
        """Tags on service ``name`` (its digest follows what it runs)."""
        self._call(
            "tag_resource",
            f"tagging service {name}",
            resourceArn=self._arn(name),
            tags=[{"key": k, "value": v} for k, v in tags.items()],
        )

    def create_external_service(self, release: EcsRelease, replicas: int) -> None:
        """A service whose tasks are in task sets (the EXTERNAL deployment controller)."""
        self._call(
            "create_service",
            f"creating service {release.name}",
            cluster=self.cluster,
            serviceName=release.name,
            desiredCount=replicas,
            deploymentController={"type": "EXTERNAL"},
            deploymentConfiguration={"minimumHealthyPercent": 100, "maximumPercent": 200},
            tags=[{"key": k, "value": v} for k, v in release.tags().items()],
        )
        self.log(f"created service {release.name} (task sets), {replicas} tasks")

    def task_sets(self, name: str) -> list[EcsTaskSet]:
        found = self._call(
            "describe_task_sets", f"reading {name}'s task sets", cluster=self.cluster, service=name
        )
        return [
            EcsTaskSet(
                id=t["id"],
                arn=t.get("taskSetArn", t["id"]),
                external_id=t.get("externalId", ""),
                task_definition=t.get("taskDefinition", ""),
                scale=float((t.get("scale") or {}).get("value", 0.0)),
                status=t.get("status", ""),
                stability=t.get("stabilityStatus", ""),
                running=int(t.get("runningCount", 0)),
                desired=int(t.get("computedDesiredCount", 0)),
            )
            for t in found.get("taskSets") or []
            if t.get("status") != "DRAINING"
        ]

    def create_task_set(
        self,
        release: EcsRelease,
        *,
        target_group_arn: str | None = None,
        task_definition: str | None = None,
    ) -> EcsTaskSet:
        """A task set of ``release`` (its task definition registered, or ``task_definition``:
        an earlier revision, for a rollback), created empty (0 %): :meth:`scale_task_set`
        gives it its share."""
        task_definition = task_definition or self.register(release)
        params: dict[str, Any] = {
            "cluster": self.cluster,
            "service": release.name,
            "taskDefinition": task_definition,
            "externalId": release.digest,
            "launchType": self.launch_type,
            "scale": {"value": 0.0, "unit": "PERCENT"},
        }
        if self.network:
            params["networkConfiguration"] = {"awsvpcConfiguration": self.network}
        if target_group_arn:
            params["loadBalancers"] = [
                {"targetGroupArn": target_group_arn, "containerName": "app",
                 "containerPort": release.port}
            ]  # fmt: skip
        self._call("create_task_set", f"creating a task set of {release.name}", **params)
        self.log(f"task set of {release.image} in {release.name} (0 % until scaled)")
        return next(t for t in self.task_sets(release.name) if t.external_id == release.digest)

    def scale_task_set(self, name: str, task_set: EcsTaskSet, percent: float) -> None:
        self._call(
            "update_task_set",
            f"scaling a task set of {name} to {percent:g} %",
            cluster=self.cluster,
            service=name,
            taskSet=task_set.arn,
            scale={"value": percent, "unit": "PERCENT"},
        )
        self.log(f"{name}: task set {task_set.external_id[:19]} at {percent:g} %")

    def make_primary(self, name: str, task_set: EcsTaskSet) -> None:
        self._call(
            "update_service_primary_task_set",
            f"making {task_set.external_id} primary in {name}",
            cluster=self.cluster,
            service=name,
            primaryTaskSet=task_set.arn,
        )
        self._tag(name, {LABEL_DIGEST: task_set.external_id})

    def delete_task_set(self, name: str, task_set: EcsTaskSet) -> None:
        self._call(
            "delete_task_set",
            f"removing a task set of {name}",
            cluster=self.cluster,
            service=name,
            taskSet=task_set.arn,
            force=True,
        )
        self.log(f"{name}: task set {task_set.external_id[:19]} removed")

    def wait_task_set(
        self, name: str, external_id: str, *, timeout: float, alarms: Sequence[str] = ()
    ) -> EcsTaskSet:
        """Until the task set is in STEADY_STATE with its tasks running; DeployAborted at an
        alarm in ALARM or at ``timeout``."""
        deadline = self.clock() + timeout
        while True:
            found = next((t for t in self.task_sets(name) if t.external_id == external_id), None)
            if found is None:
                raise DeployAborted(f"the task set of {external_id} in {name} is gone")
            firing = self.alarms_firing(alarms)
            if firing:
                raise DeployAborted(f"alarm {', '.join(firing)} in ALARM while {name} scaled")
            if found.stability == "STEADY_STATE" and found.running >= found.desired:
                return found
            if self.clock() >= deadline:
                raise DeployAborted(
                    f"the task set of {external_id} in {name} still {found.stability} "
                    f"({found.running}/{found.desired} running) after {timeout:.0f}s"
                )
            self.sleep(5.0)

    def _arn(self, name: str) -> str:
        return str(
            self._call(
                "describe_services", "reading its ARN", cluster=self.cluster, services=[name]
            )["services"][0]["serviceArn"]
        )

    def revisions(self, family: str) -> list[str]:
        """The ACTIVE revisions of task definition ``family``, newest first."""
        arns: list[str] = []
        params: dict[str, Any] = {"familyPrefix": family, "status": "ACTIVE", "sort": "DESC"}
        while True:
            page = self._call("list_task_definitions", f"listing {family}'s revisions", **params)
            arns += [
                a for a in page.get("taskDefinitionArns") or [] if _family(a) == family
            ]  # a prefix matches longer families too
            if not page.get("nextToken"):
                return sorted(set(arns), key=lambda a: -int(a.rsplit(":", 1)[1]))
            params["nextToken"] = page["nextToken"]

    def redeploy(
        self, name: str, task_definition: str, replicas: int, settings: EcsDeploymentSettings
    ) -> None:
        """Service ``name`` back on an earlier ``task_definition`` (a rollback); its digest tag
        follows the revision's image."""
        image = self.task_definition(task_definition)["containerDefinitions"][0]["image"]
        self._call(
            "update_service",
            f"rolling {name} back",
            cluster=self.cluster,
            service=name,
            taskDefinition=task_definition,
            desiredCount=replicas,
            deploymentConfiguration=settings.as_api(),
        )
        self._tag(name, {LABEL_DIGEST: str(ImageRef.parse(image).digest)})
        self.log(f"service {name} back on {task_definition} ({image})")

    def scale(self, name: str, replicas: int) -> None:
        self._call(
            "update_service",
            f"scaling service {name} to {replicas}",
            cluster=self.cluster,
            service=name,
            desiredCount=replicas,
        )
        self.log(f"scaled service {name} to {replicas} tasks")

    def alarms_firing(self, names: Sequence[str]) -> list[str]:
        """Which of the CloudWatch alarms ``names`` are in ALARM now."""
        return alarms_firing(self.cloudwatch, names)

    def wait(
        self,
        name: str,
        *,
        timeout: float = 900.0,
        poll: float = 5.0,
        alarms: Sequence[str] = (),
        progress: Callable[[EcsService], None] | None = None,
    ) -> EcsService:
        """Until the service's primary deployment is COMPLETED with every task running.
        DeployAborted when ECS says FAILED (the circuit breaker), when one of ``alarms`` is in
        ALARM, or at ``timeout``."""
        deadline = self.clock() + timeout
        while True:
            service = self.service(name)
            if service is None:
                raise DeployAborted(f"ECS service {name} is gone")
            primary = service.primary
            if progress is not None:
                progress(service)
            if primary is not None and primary.rollout_state == "FAILED":
                raise DeployAborted(
                    f"ECS deployment {primary.id} of {name} FAILED ({primary.failed} tasks "
                    f"failed): {primary.reason or 'the deployment circuit breaker tripped'}"
                )
            if primary is not None and primary.failed >= breaker_threshold(primary.desired):
                raise DeployAborted(
                    f"ECS deployment {primary.id} of {name}: {primary.failed} tasks failed to "
                    f"start, the circuit breaker's threshold ({breaker_threshold(primary.desired)}"
                    f" for {primary.desired} tasks): ECS fails it and rolls back"
                )
            firing = self.alarms_firing(alarms)
            if firing:
                raise DeployAborted(
                    f"alarm {', '.join(firing)} in ALARM during the deployment of {name}"
                )
            if (
                primary is not None
                and primary.rollout_state == "COMPLETED"
                and primary.running >= primary.desired
            ):
                self.log(
                    f"ECS deployment {primary.id} of {name} COMPLETED: {primary.running} tasks"
                )
                return service
            if self.clock() >= deadline:
                state = primary.rollout_state if primary else "no deployment"
                raise DeployAborted(f"ECS service {name} still {state} after {timeout:.0f}s")
            self.sleep(poll)

    def bake(self, name: str, seconds: float, alarms: Sequence[str], poll: float = 5.0) -> None:
        """Watch ``alarms`` for ``seconds`` after a change: DeployAborted on the first in ALARM."""
        deadline = self.clock() + seconds
        while True:
            firing = self.alarms_firing(alarms)
            if firing:
                raise DeployAborted(f"alarm {', '.join(firing)} in ALARM while {name} baked")
            left = deadline - self.clock()
            if left <= 0:
                return
            self.sleep(min(poll, left))


def alarms_firing(cloudwatch: Any, names: Sequence[str]) -> list[str]:
    """Which of the CloudWatch alarms ``names`` are in ALARM now (``cloudwatch``: a boto3
    client)."""
    if not names:
        return []
    if cloudwatch is None:
        raise TargetError("alarms are named but no CloudWatch client was given")
    found = cloudwatch.describe_alarms(AlarmNames=list(names))
    return sorted(
        a["AlarmName"] for a in found.get("MetricAlarms") or [] if a["StateValue"] == "ALARM"
    )


def _family(arn: str) -> str:
    """``arn:aws:ecs:...:task-definition/<family>:<revision>`` -> ``<family>``."""
    return arn.rsplit("/", 1)[-1].rsplit(":", 1)[0]


def breaker_threshold(desired: int) -> int:
    """How many failed tasks trip ECS's deployment circuit breaker: half the desired count,
    at least 3 and at most 200 (AWS's documented rule)."""
    return min(200, max(3, math.ceil(desired / 2)))


def _subset(wanted: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether ``current`` (as ECS returns it, with defaults added) holds every field of
    ``wanted`` with the same value."""
    for key, value in wanted.items():
        have = current.get(key)
        if isinstance(value, list):
            if sorted(map(repr, value)) != sorted(map(repr, have or [])):
                return False
        elif have != value:
            return False
    return True
