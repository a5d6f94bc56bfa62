"""One inventory of what runs: a service's instances (containers of an engine and Swarm tasks
alike) and its Swarm services, read from the engine's API in one call each, into one model
whose properties decode the labels (:mod:`.labels`).

Every reader goes through it: the targets (which instances to start, stop, replace), the
strategies' view of where a service stands (:mod:`docker_delivery.strategies.state`), the
infrastructure changes and drift (:mod:`docker_delivery.infra`), rollback, rollout status and
the sensors. Nothing in it assumes the worker's own host: it is given a Docker client (local or
remote) and addresses come from the instances' networks. On a Swarm manager, the tasks are read
from the Swarm API (tasks on every node, with the address Swarm gave each on the service's
network), not from the containers the manager's engine happens to run; on any other engine
(a plain engine, a Swarm worker) from its containers.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from docker_delivery.targets.labels import (
    LABEL_CONFIG,
    LABEL_DIGEST,
    LABEL_ENV_KEYS,
    LABEL_ENVIRONMENT,
    LABEL_IMAGE,
    LABEL_MANAGED,
    LABEL_PORT,
    LABEL_PREVIOUS_DIGEST,
    LABEL_PREVIOUS_IMAGE,
    LABEL_ROLE,
    LABEL_SERVICE,
    LABEL_SLOT,
    LABEL_SLOT_GROUP,
    ROLE_APP,
    SWARM_SERVICE_NAME,
    SWARM_TASK_NAME,
)

if TYPE_CHECKING:
    import docker

__all__ = ["LIVE", "Instance", "Inventory", "network_name_of"]

LIVE = "live"  # the group of an instance started without one (minimum in-service, rolling)
_EXITED = re.compile(r"^Exited \((-?\d+)\)")


def network_name_of(service: str, environment: str) -> str:
    """The service's own network, where its instances have the address the router uses."""
    return f"dd-{service}-{environment}"


@dataclass(frozen=True)
class Instance:
    """One running (or stopped) copy of a release: a container of the engine, or a Swarm task's
    container. The stored fields are what every reader needs; the properties decode the rest of
    the labels it was started with."""

    id: str
    name: str
    service: str
    environment: str
    digest: str
    slot: int
    ip: str
    port: int
    running: bool
    exit_code: int | None = None
    swarm_service: str = ""  # the Swarm service a task belongs to; "" for a container
    config: str = ""  # Release.config_id of what it runs
    node: str = ""  # the Swarm node a task runs on ("" for a container, or when not known)
    task_id: str = ""  # the Swarm task's id ("" for a container)
    labels: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def group(self) -> str:
        """The router group it was started for (``live`` when unlabelled)."""
        return self.labels.get(LABEL_SLOT_GROUP) or LIVE

    @property
    def image(self) -> str:
        """The digest-pinned reference it runs ("" when unlabelled)."""
        return self.labels.get(LABEL_IMAGE, "")

    @property
    def previous_digest(self) -> str:
        """What ran before it was deployed (a rollback goes back to it)."""
        return self.labels.get(LABEL_PREVIOUS_DIGEST, "")

    @property
    def previous_image(self) -> str:
        return self.labels.get(LABEL_PREVIOUS_IMAGE, "")

    @property
    def env_keys(self) -> tuple[str, ...] | None:
        """Names of its run-time environment variables, or None (started before the label)."""
        if LABEL_ENV_KEYS not in self.labels:
            return None
        return tuple(k for k in self.labels[LABEL_ENV_KEYS].split(",") if k)

    @property
    def kind(self) -> str:
        """The target it runs on: ``swarm`` (a task) or ``engine`` (a container)."""
        return "swarm" if self.swarm_service else "engine"

    @classmethod
    def decode(
        cls,
        *,
        id: str,
        name: str,
        labels: Mapping[str, str],
        ip: str,
        running: bool,
        exit_code: int | None,
        port: int,
        node: str = "",
        task_id: str = "",
    ) -> Instance:
        """An instance from what the engine says of a container: its labels tell the rest."""
        task = labels.get(SWARM_TASK_NAME, "").split(".")  # <service>.<slot>.<task id>
        slot = labels.get(LABEL_SLOT) or (task[1] if len(task) >= 3 else "")
        return cls(
            id=id,
            name=name,
            service=labels.get(LABEL_SERVICE, ""),
            environment=labels.get(LABEL_ENVIRONMENT, ""),
            digest=labels.get(LABEL_DIGEST, ""),
            slot=int(slot) if slot.isdigit() else 0,
            ip=ip,
            port=int(labels[LABEL_PORT]) if labels.get(LABEL_PORT, "").isdigit() else port,
            running=running,
            exit_code=None if running else exit_code,
            swarm_service=labels.get(SWARM_SERVICE_NAME, ""),
            config=labels.get(LABEL_CONFIG, ""),
            node=node,
            task_id=task_id,
            labels=dict(labels),
        )

    @classmethod
    def of_container(cls, container: Any, port: int) -> Instance:
        """From a container the SDK inspected (one just started, restarted or looked up)."""
        labels = container.labels
        nets = container.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
        own = network_name_of(labels.get(LABEL_SERVICE, ""), labels.get(LABEL_ENVIRONMENT, ""))
        state = container.attrs.get("State", {})
        return cls.decode(
            id=container.id,
            name=container.name,
            labels=labels,
            ip=(nets.get(own) or {}).get("IPAddress", ""),
            running=bool(state.get("Running")),
            exit_code=state.get("ExitCode"),
            port=port,
        )

    @classmethod
    def of_summary(cls, raw: Mapping[str, Any], port: int) -> Instance:
        """From an entry of the engine's container list (no inspect per container)."""
        labels: Mapping[str, str] = raw.get("Labels") or {}
        nets = (raw.get("NetworkSettings") or {}).get("Networks") or {}
        own = network_name_of(labels.get(LABEL_SERVICE, ""), labels.get(LABEL_ENVIRONMENT, ""))
        exited = _EXITED.match(raw.get("Status") or "")
        return cls.decode(
            id=raw["Id"],
            name=(raw.get("Names") or ["/?"])[0].lstrip("/"),
            labels=labels,
            ip=(nets.get(own) or {}).get("IPAddress", ""),
            running=raw.get("State") == "running",
            exit_code=int(exited.group(1)) if exited else None,
            port=port,
        )

    @classmethod
    def of_task(cls, raw: Mapping[str, Any], swarm_service: str, port: int) -> Instance:
        """From a task of the Swarm API (on any node): the labels its container was given, its
        address on the service's network, its state and container."""
        labels = {
            **((raw.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels", {}),
            SWARM_SERVICE_NAME: swarm_service,
            SWARM_TASK_NAME: f"{swarm_service}.{raw.get('Slot', 0)}.{raw['ID']}",
        }
        own = network_name_of(labels.get(LABEL_SERVICE, ""), labels.get(LABEL_ENVIRONMENT, ""))
        ip = ""
        for attachment in raw.get("NetworksAttachments") or []:
            if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") == own:
                ip = next(iter(attachment.get("Addresses") or []), "").split("/")[0]
        status = raw.get("Status") or {}
        container = status.get("ContainerStatus") or {}
        running = status.get("State") == "running"
        return cls.decode(
            id=container.get("ContainerID") or raw["ID"],
            name=labels[SWARM_TASK_NAME],
            labels=labels,
            ip=ip,
            running=running,
            exit_code=None if running else container.get("ExitCode"),
            port=port,
            node=raw.get("NodeID", ""),
            task_id=raw["ID"],
        )


# Whether an engine (by client) is a Swarm manager, asked once per client.
_MANAGERS: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def is_swarm_manager(client: docker.DockerClient) -> bool:
    """Whether ``client``'s engine is a manager of a Swarm (so it answers the Swarm API)."""
    known = _MANAGERS.get(client)
    if known is None:
        swarm = client.info().get("Swarm") or {}
        known = swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))
        _MANAGERS[client] = known
    return known


class Inventory:
    """What runs, read from one engine. ``port`` is the app's port for instances started before
    their port was a label."""

    def __init__(self, client: docker.DockerClient, *, port: int = 8080) -> None:
        self._client = client
        self._port = port

    def instances(
        self,
        service: str,
        environment: str,
        *,
        include_stopped: bool = False,
        swarm_service: str | None = None,
    ) -> list[Instance]:
        """The app instances of ``service`` in ``environment`` (running ones unless asked): its
        containers and its Swarm tasks (from the Swarm API on a manager: on every node); only
        one Swarm service's tasks with ``swarm_service``. Ordered by slot, running first, then
        name."""
        filters = [
            f"{LABEL_MANAGED}=true",
            f"{LABEL_SERVICE}={service}",
            f"{LABEL_ENVIRONMENT}={environment}",
            f"{LABEL_ROLE}={ROLE_APP}",
        ]
        if swarm_service is not None:
            if is_swarm_manager(self._client):
                return self.tasks(swarm_service, include_stopped=include_stopped)
            filters.append(f"{SWARM_SERVICE_NAME}={swarm_service}")
            return self._containers(filters, include_stopped)
        if not is_swarm_manager(self._client):
            return self._containers(filters, include_stopped)
        containers = [c for c in self._containers(filters, include_stopped) if not c.swarm_service]
        names = {
            svc.id: svc.attrs["Spec"]["Name"] for svc in self.swarm_services(service, environment)
        }
        raw = self._client.api.tasks(filters={"label": filters})
        tasks = [
            Instance.of_task(t, names[t["ServiceID"]], self._port)
            for t in raw
            if t.get("ServiceID") in names and _listed(t, include_stopped)
        ]
        return _ordered(containers + tasks)

    def tasks(self, swarm_service: str, *, include_stopped: bool = False) -> list[Instance]:
        """The tasks of one Swarm service of ours (on every node), ordered by task slot; none
        when it does not exist."""
        if not is_swarm_manager(self._client):
            filters = [f"{LABEL_MANAGED}=true", f"{SWARM_SERVICE_NAME}={swarm_service}"]
            return self._containers(filters, include_stopped)
        import docker.errors

        try:
            raw = self._client.api.tasks(filters={"service": swarm_service})
        except docker.errors.NotFound:
            return []
        return _ordered(
            Instance.of_task(t, swarm_service, self._port)
            for t in raw
            if _listed(t, include_stopped)
            and ((t.get("Spec") or {}).get("ContainerSpec") or {})
            .get("Labels", {})
            .get(LABEL_MANAGED)
            == "true"
        )

    def _containers(self, label_filters: list[str], include_stopped: bool) -> list[Instance]:
        raw = self._client.api.containers(all=include_stopped, filters={"label": label_filters})
        return _ordered(Instance.of_summary(entry, self._port) for entry in raw)

    def swarm_services(self, service: str, environment: str) -> list[Any]:
        """The Swarm services of ``service`` in ``environment`` as the Swarm API holds them (their
        ``attrs``: spec, labels, replicas), ordered by name."""
        filters = {"label": [f"{LABEL_SERVICE}={service}", f"{LABEL_ENVIRONMENT}={environment}"]}
        found = self._client.services.list(filters=filters)
        return sorted(found, key=lambda svc: svc.attrs["Spec"]["Name"])


def _listed(task: Mapping[str, Any], include_stopped: bool) -> bool:
    """A task to list: one whose container runs; with ``include_stopped``, also one Swarm still
    wants running (starting, or failed and about to be restarted)."""
    if (task.get("Status") or {}).get("State") == "running":
        return True
    return include_stopped and task.get("DesiredState") == "running"


def _ordered(found: Any) -> list[Instance]:
    return sorted(found, key=lambda i: (i.slot, not i.running, i.name))
