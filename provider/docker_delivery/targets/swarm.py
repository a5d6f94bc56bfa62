"""SwarmTarget: a service is a Swarm service (one per release digest) on a swarm-scoped network.

Each release runs as its own replicated Swarm service ``<service>-<env>-<config12>``
(Release.config_id: the digest with the environment it runs with), with
``endpoint_mode=dnsrr`` (no virtual IP: this needs no IPVS, and the router addresses tasks
directly). Its ``update_config`` and ``rollback_config`` are exposed as :class:`UpdatePolicy`, so
Swarm's own ``docker service update`` keeps working on it with the settings users chose.

A release's secrets with a value become Docker secrets named after a fingerprint of the value
(:func:`swarm_secret_name`), created once and mounted at ``/run/secrets/<name>``; a new value is
a new Docker secret, so a service never changes under a running task. Resource limits go into
the service's resources, extra networks into its networks.

What runs is read from the manager's Swarm API (tasks on every node, their addresses on the
service's overlay network, their states and logs): a Swarm of several nodes is driven through
its manager. Stopping one drained task is the exception: it goes through the engine of the node
that runs it (:mod:`.nodes`).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from docker_delivery.errors import DeliveryError
from docker_delivery.targets.base import Instance, Release, SecretMount, TargetError
from docker_delivery.targets.engine import (
    LOG_TAIL_LINES,
    demux_log,
    ensure_network,
    exit_message,
    last_lines,
    overlay_or_warning,
    pull_if_missing,
)
from docker_delivery.targets.inventory import Inventory, is_swarm_manager
from docker_delivery.targets.labels import (
    LABEL_CONFIG,
    LABEL_DIGEST,
    LABEL_ENVIRONMENT,
    LABEL_MANAGED,
    LABEL_SERVICE,
    LABEL_SLOT_GROUP,
)
from docker_delivery.targets.labels import LABEL_SECRET_NAME as LABEL_SECRET_NAME
from docker_delivery.targets.nodes import NEEDS_NODE_ENGINE, node_engine, nodes_without_engine

if TYPE_CHECKING:
    import docker
    import docker.types

_NS = 1_000_000_000


def swarm_secret_name(service: str, environment: str, secret: SecretMount) -> str:
    """The Docker secret holding ``secret``'s value: ends with 12 digits of its fingerprint."""
    if secret.docker_secret is not None:
        return secret.docker_secret
    name = f"{service}-{environment}-{secret.name}-{secret.fingerprint[:12]}"
    if len(name) > 64:  # Docker's limit
        scope = hashlib.sha256(f"{service}/{environment}/{secret.name}".encode()).hexdigest()
        name = f"dd-{scope[:16]}-{secret.fingerprint[:12]}"
    return name


@dataclass(frozen=True)
class UpdatePolicy:
    """Swarm's UpdateConfig / RollbackConfig, validated."""

    parallelism: int = 1
    delay: float = 0.0
    failure_action: Literal["pause", "continue", "rollback"] = "pause"
    monitor: float = 5.0
    max_failure_ratio: float = 0.0
    order: Literal["start-first", "stop-first"] = "stop-first"

    def __post_init__(self) -> None:
        if self.parallelism < 0:
            raise DeliveryError(f"parallelism {self.parallelism} must be >= 0 (0 = all at once)")
        if self.delay < 0 or self.monitor < 0:
            raise DeliveryError("delay and monitor must be >= 0 seconds")
        if self.failure_action not in ("pause", "continue", "rollback"):
            raise DeliveryError(
                f"failure_action {self.failure_action!r} must be pause, continue or rollback"
            )
        if not 0 <= self.max_failure_ratio <= 1:
            raise DeliveryError(f"max_failure_ratio {self.max_failure_ratio} must be in 0..1")
        if self.order not in ("start-first", "stop-first"):
            raise DeliveryError(f"order {self.order!r} must be start-first or stop-first")

    def to_docker(self, kind: Literal["update", "rollback"]) -> docker.types.UpdateConfig:
        import docker.types

        cls = docker.types.UpdateConfig if kind == "update" else docker.types.RollbackConfig
        action = self.failure_action
        if kind == "rollback" and action == "rollback":
            action = "pause"  # a rollback cannot roll back
        return cls(
            parallelism=self.parallelism,
            delay=int(self.delay * _NS),
            failure_action=action,
            monitor=int(self.monitor * _NS),
            max_failure_ratio=self.max_failure_ratio,
            order=self.order,
        )

    @classmethod
    def from_docker(cls, raw: dict[str, Any] | None) -> UpdatePolicy:
        raw = raw or {}
        return cls(
            parallelism=int(raw.get("Parallelism", 1)),
            delay=raw.get("Delay", 0) / _NS,
            failure_action=raw.get("FailureAction", "pause"),
            monitor=raw.get("Monitor", 5 * _NS) / _NS,
            max_failure_ratio=float(raw.get("MaxFailureRatio", 0.0)),
            order=raw.get("Order", "stop-first"),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SwarmService:
    id: str
    name: str
    digest: str
    config: str
    replicas: int
    update_config: UpdatePolicy
    rollback_config: UpdatePolicy


class SwarmTarget:
    """Create, scale, inspect and remove the Swarm services of a service; always by digest."""

    kind = "swarm"

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        restart_delay: float = 10.0,
        start_timeout: float = 120.0,
        log: Callable[[str], None] = print,
    ) -> None:
        self._client = client
        self._restart_delay = restart_delay
        self._start_timeout = start_timeout
        self._log = log

    @property
    def client(self) -> docker.DockerClient:
        return self._client

    def network(self, service: str, environment: str) -> str:
        swarm = self._client.info().get("Swarm", {})
        if swarm.get("LocalNodeState") != "active":
            raise TargetError("this engine is not in a Swarm: run `docker swarm init` first")
        if not swarm.get("ControlAvailable"):
            raise TargetError(
                "this engine is a Swarm worker: give the environment a manager's engine (only a "
                "manager answers for the services and tasks of every node)"
            )
        name = ensure_network(self._client, service, environment, swarm=True)
        warning = overlay_or_warning(self._client, name)
        if warning:
            self._log(warning)
        return name

    def service_name(self, release: Release) -> str:
        """``<service>-<env>-<config12>``, or ``<service>-<env>-<group>-<config12>`` for a
        release labelled with the router group it serves in (blue/green, A/B): one release can
        then run in two groups at once, as an engine target's containers can. Past Swarm's
        63 characters: ``dd-<16 hex digits of service/env/group>-<config12>``."""
        group = release.labels.get(LABEL_SLOT_GROUP)
        middle = f"-{group}" if group else ""
        name = f"{release.service}-{release.environment}{middle}-{release.config_id}"
        if len(name) > 63:  # Swarm refuses longer names
            scope = f"{release.service}/{release.environment}/{group or ''}"
            name = f"dd-{hashlib.sha256(scope.encode()).hexdigest()[:16]}-{release.config_id}"
        return name

    def ensure_image(self, release: Release) -> None:
        """The image on this engine too: the deployment lock and switch markers are containers
        created from it (the tasks pull it themselves)."""
        pull_if_missing(self._client, release, self._log)

    def services(self, service: str, environment: str) -> list[SwarmService]:
        found = []
        for svc in Inventory(self._client).swarm_services(service, environment):
            spec = svc.attrs["Spec"]
            found.append(
                SwarmService(
                    id=svc.id,
                    name=spec["Name"],
                    digest=spec.get("Labels", {}).get(LABEL_DIGEST, ""),
                    config=spec.get("Labels", {}).get(LABEL_CONFIG, ""),
                    replicas=int(spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 0)),
                    update_config=UpdatePolicy.from_docker(spec.get("UpdateConfig")),
                    rollback_config=UpdatePolicy.from_docker(spec.get("RollbackConfig")),
                )
            )
        return found

    def create(
        self,
        release: Release,
        replicas: int,
        *,
        update_config: UpdatePolicy | None = None,
        rollback_config: UpdatePolicy | None = None,
    ) -> SwarmService:
        """The release's Swarm service, created with ``replicas`` unless it exists already."""
        import docker.types

        name = self.service_name(release)
        for existing in self.services(release.service, release.environment):
            if existing.name == name:
                return existing
        net = self.network(release.service, release.environment)
        labels = release.run_labels()
        resources = None
        if release.limits is not None:
            resources = docker.types.Resources(
                cpu_limit=release.limits.nano_cpus or None, mem_limit=release.limits.memory
            )
        self._client.services.create(
            str(release.image),
            command=list(release.command) if release.command else None,
            name=name,
            env=[f"{k}={v}" for k, v in release.start_env().items()],
            labels=labels,
            container_labels=labels,
            networks=[net, *release.networks],
            secrets=[self._secret(release, s) for s in release.secrets if s.expose == "file"],
            resources=resources,
            mode=docker.types.ServiceMode("replicated", replicas=replicas),
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
            update_config=(update_config or UpdatePolicy()).to_docker("update"),
            rollback_config=(rollback_config or UpdatePolicy()).to_docker("rollback"),
            restart_policy=docker.types.RestartPolicy(
                condition="any", delay=int(self._restart_delay * _NS)
            ),
            stop_grace_period=int(release.stop_grace * _NS),
        )
        self._log(f"created Swarm service {name} ({release.image.familiar}) x{replicas}")
        return next(
            s for s in self.services(release.service, release.environment) if s.name == name
        )

    def _secret(self, release: Release, secret: SecretMount) -> docker.types.SecretReference:
        """A reference to ``secret``'s Docker secret, created (labelled, never logged) if new."""
        import docker.errors
        import docker.types

        name = swarm_secret_name(release.service, release.environment, secret)
        found = self._client.secrets.list(filters={"name": name})
        existing = next((s for s in found if s.name == name), None)
        if existing is None and secret.value is None:
            raise TargetError(f"Docker secret {name!r} (for {secret.name}) does not exist")
        if existing is None:
            try:
                existing = self._client.secrets.create(
                    name=name,
                    data=(secret.value or "").encode(),
                    labels={
                        LABEL_MANAGED: "true",
                        LABEL_SERVICE: release.service,
                        LABEL_ENVIRONMENT: release.environment,
                        LABEL_SECRET_NAME: secret.name,
                    },
                )
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # created meanwhile by a retry of this step
                    raise
                existing = next(s for s in self._client.secrets.list() if s.name == name)
            self._log(f"created Docker secret {name} for {secret.name}")
        return docker.types.SecretReference(existing.id, name, filename=secret.name)

    def start_many(self, release: Release, slots: Sequence[int]) -> list[Instance]:
        """Running tasks of ``release`` in each of ``slots``: its Swarm service (for its group) is
        created or scaled up so that those slots are filled (Swarm fills the lowest free task
        slots), then waited for. A task Swarm reports failed ends the wait at once."""
        if not slots:
            return []
        name = self.service_name(release)
        existing = next(
            (s for s in self.services(release.service, release.environment) if s.name == name),
            None,
        )
        running = {t.slot for t in self.tasks(name)} if existing else set()
        before = {t["ID"] for t in self._swarm_tasks(name)}
        want = len(running | set(slots))
        if existing is None:
            self.create(release, want)
        elif existing.replicas < want:
            self.scale(name, want)
        deadline = time.monotonic() + self._start_timeout
        while True:
            tasks = {t.slot: t for t in self.tasks(name) if t.running and t.ip}
            if all(slot in tasks for slot in slots):
                return [tasks[slot] for slot in slots]
            errors = self._task_errors(name, ignore=before)
            if errors or time.monotonic() > deadline:
                have = len([s for s in slots if s in tasks])
                why = f"Swarm reports: {errors}" if errors else f"{self._start_timeout:g}s passed"
                raise TargetError(f"{name}: {have}/{len(slots)} tasks running; {why}")
            time.sleep(0.2)

    def remove_many(self, instances: Sequence[Instance], *, grace: float) -> None:
        """Tasks that take no traffic away: a Swarm service left with none is removed; otherwise
        the tasks are stopped (SIGTERM, SIGKILL after ``grace``) and, once Swarm sees them down,
        the service is scaled down by as many (it removes tasks that do not run first)."""
        by_service: dict[str, list[Instance]] = {}
        for instance in instances:
            if not instance.swarm_service:
                raise TargetError(f"{instance.name} is not a Swarm task: remove it on the engine")
            by_service.setdefault(instance.swarm_service, []).append(instance)
        for name, victims in by_service.items():
            self._shrink(name, victims, grace=grace)

    def remove_slots(
        self, release: Release, slots: Sequence[int] | None = None, *, grace: float
    ) -> None:
        """Remove ``release``'s tasks (of its Swarm service for its group) in ``slots``, or the
        service: a start that failed half-way, a variant given up."""
        name = self.service_name(release)
        if slots is None:
            self.remove(name)
            return
        self._shrink(name, [t for t in self.tasks(name) if t.slot in slots], grace=grace)

    def _shrink(self, name: str, victims: Sequence[Instance], *, grace: float) -> None:
        gone = {v.id for v in victims}
        keep = [t for t in self.tasks(name) if t.running and t.id not in gone]
        if not keep:
            self.remove(name)
            return
        for victim in victims:
            self.stop_task(victim, grace=grace)
        deadline = time.monotonic() + 10.0
        while self._running_task_containers(name) & gone and time.monotonic() < deadline:
            time.sleep(0.1)
        self.scale(name, len(keep))

    def _swarm_tasks(self, name: str) -> list[dict[str, Any]]:
        """Swarm's tasks of the service ``name`` (none when it does not exist)."""
        import docker.errors

        try:
            return list(self._client.api.tasks(filters={"service": name}))
        except docker.errors.NotFound:
            return []

    def _running_task_containers(self, name: str) -> set[str]:
        """Container ids of the tasks Swarm holds as running."""
        return {
            t["Status"].get("ContainerStatus", {}).get("ContainerID", "")
            for t in self._swarm_tasks(name)
            if t["Status"].get("State") == "running"
        }

    def scale(self, name: str, replicas: int) -> None:
        """Change the replica count and nothing else. (docker-py's ``Service.scale`` sends the
        spec as inspected *with defaults inserted*: the first such update makes Swarm see every
        running task as out of date and replace it, so a task serving traffic would be stopped
        without a drain. The spec is sent back here exactly as stored, as ``docker service
        scale`` does.)"""
        raw = self._client.api.inspect_service(name)
        spec = raw["Spec"]
        self._client.api.update_service(
            raw["ID"],
            raw["Version"]["Index"],
            task_template=spec["TaskTemplate"],
            name=spec["Name"],
            labels=spec.get("Labels") or {},
            mode={"Replicated": {"Replicas": replicas}},
            update_config=spec.get("UpdateConfig"),
            rollback_config=spec.get("RollbackConfig"),
            endpoint_spec=spec.get("EndpointSpec"),
        )
        self._log(f"scaled {name} to {replicas}")

    def remove(self, name: str) -> None:
        """Remove the Swarm service and wait until its task containers have stopped (Swarm
        stops them after the call returns; each within its stop grace period), so that what
        runs next reads no task of it."""
        import docker.errors

        try:
            svc = self._client.services.get(name)
        except docker.errors.NotFound:
            return
        spec = svc.attrs["Spec"]
        grace = spec["TaskTemplate"].get("ContainerSpec", {}).get("StopGracePeriod")
        with contextlib.suppress(docker.errors.NotFound):
            svc.remove()
        deadline = time.monotonic() + (grace or 10 * _NS) / _NS + 10
        while self._stopping(svc.id, spec.get("Labels") or {}) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self._stopping(svc.id, spec.get("Labels") or {})
        self._log(
            f"removed Swarm service {name}"
            + (f"; {left} task container(s) still stopping" if left else "")
        )

    def _stopping(self, service_id: str, labels: dict[str, str]) -> int:
        """How many tasks of the removed service ``service_id`` still run (on any node)."""
        if not is_swarm_manager(self._client):
            return len(self.tasks(service_id))
        keys = (LABEL_SERVICE, LABEL_ENVIRONMENT)
        filters = {"label": [f"{k}={labels[k]}" for k in keys if k in labels]}
        return len(
            [
                t
                for t in self._client.api.tasks(filters=filters)
                if t.get("ServiceID") == service_id and t["Status"].get("State") == "running"
            ]
        )

    def tasks(self, name: str) -> list[Instance]:
        """The running tasks of one Swarm service (on every node), ordered by task slot."""
        return Inventory(self._client).tasks(name)

    def require_node_engines(self, what: str) -> None:
        """Refuse ``what`` (which stops given tasks) when a node that runs or may run tasks has
        no engine this manager can reach (:mod:`.nodes`): before anything changes."""
        nodes = {
            n.id
            for n in self._client.nodes.list()
            if n.attrs.get("Spec", {}).get("Availability") == "active"
            and n.attrs.get("Status", {}).get("State") == "ready"
        }
        missing = nodes_without_engine(self._client, nodes)
        if missing:
            raise TargetError(
                f"{what} stops old tasks one by one on {', '.join(missing)}: {NEEDS_NODE_ENGINE}"
            )

    def instances(self, service: str, environment: str) -> list[Instance]:
        return [i for s in self.services(service, environment) for i in self.tasks(s.name)]

    def wait_tasks(
        self,
        name: str,
        count: int,
        *,
        timeout: float,
        exclude: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> list[Instance]:
        """Wait until ``count`` task containers of ``name`` run (not in ``exclude``)."""
        deadline = time.monotonic() + timeout
        while True:
            running = [t for t in self.tasks(name) if t.running and t.ip and t.id not in exclude]
            if len(running) >= count:
                return running
            if time.monotonic() > deadline:
                errors = self._task_errors(name)
                raise TargetError(
                    f"{name}: {len(running)}/{count} tasks running after {timeout:.0f}s"
                    + (f"; Swarm reports: {errors}" if errors else "")
                )
            time.sleep(0.2)

    def _task_errors(self, name: str, *, ignore: set[str] = frozenset()) -> str:  # type: ignore[assignment]
        """What Swarm says of the service's tasks that ended (except those in ``ignore``)."""
        msgs = {
            t["Status"].get("Err") or t["Status"].get("Message", "")
            for t in self._swarm_tasks(name)
            if t["Status"].get("State") in ("failed", "rejected", "complete")
            and t["ID"] not in ignore
        }
        return "; ".join(sorted(m for m in msgs if m))[:500]

    def stop_task(self, instance: Instance, *, grace: float) -> None:
        """Stop one task's container (SIGTERM, SIGKILL after ``grace``): it has been drained. On
        another node than the manager's, through that node's engine (:mod:`.nodes`)."""
        import docker.errors

        engine = node_engine(self._client, instance.node, what=f"task {instance.name}")
        try:
            engine.containers.get(instance.id).stop(timeout=int(grace))
        except docker.errors.NotFound:
            return
        self._log(f"stopped task {instance.name}")

    def exit_reason(self, instance: Instance) -> str | None:
        """None while the task runs; else why it stopped, as Swarm reports it (state, exit
        code, error) with the last lines it printed (read through the manager, on any node)."""
        import docker.errors

        if not instance.task_id:  # a task read from a worker's containers
            try:
                container = self._client.containers.get(instance.id)
            except docker.errors.NotFound:
                return f"task {instance.name} is gone"
            if container.attrs.get("State", {}).get("Running"):
                return None
            return exit_message(f"task {instance.name}", container)
        try:
            task = self._client.api.inspect_task(instance.task_id)
        except docker.errors.NotFound:
            return f"task {instance.name} is gone"
        status = task.get("Status") or {}
        if status.get("State") == "running" and task.get("DesiredState") == "running":
            return None
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        what = f"task {instance.name} is {status.get('State', '?')}"
        if code is not None and status.get("State") in ("failed", "complete", "shutdown"):
            what += f" (exit code {code})"
        if status.get("Err"):
            what += f": {status['Err']}"
        tail = task_log_tail(self._client, instance.task_id)
        return f"{what}; its last output: {tail}" if tail else what


def task_log_tail(client: docker.DockerClient, task_id: str) -> str:
    """The last lines a Swarm task printed, read through the manager ("" when none or when its
    log driver keeps none to read)."""
    import docker.errors

    api = client.api
    try:
        response = api._get(
            api._url("/tasks/{0}/logs", task_id),
            params={"stdout": 1, "stderr": 1, "tail": LOG_TAIL_LINES},
            stream=False,
            timeout=5,
        )
        api._raise_for_status(response)
    except (docker.errors.APIError, OSError):
        return ""
    return last_lines(demux_log(response.content))
