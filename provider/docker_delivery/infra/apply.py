"""Applying an infrastructure plan, and nothing more, under the service's deployment lock: the same
digest released again with the spec's configuration through the deployment strategies (drained,
no request lost), scaled, or corrected in place.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from docker_delivery.errors import InfraConflict as InfraConflict
from docker_delivery.infra.live import Log, read_live
from docker_delivery.infra.plan import InfraPlan, main_unit, plan
from docker_delivery.spec import EnvironmentSpec, SecretResolver, ServiceSpec
from docker_delivery.strategies.base import result_dict
from docker_delivery.strategies.drain import take_out
from docker_delivery.strategies.lock import DeploymentLock
from docker_delivery.strategies.min_in_service import MinimumInService
from docker_delivery.strategies.rolling import Rolling
from docker_delivery.targets.base import Limits
from docker_delivery.targets.engine import create_network, network_name
from docker_delivery.targets.labels import LABEL_ENVIRONMENT, LABEL_MANAGED, LABEL_SERVICE
from docker_delivery.targets.swarm import SwarmTarget

if TYPE_CHECKING:
    import docker

    from docker_delivery.routing.haproxy import HaproxyRouter


@dataclass
class InfraResult:
    service: str
    environment: str
    digest: str | None
    changed: bool
    summary: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    replaced: int = 0
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return result_dict(self)


def strategy_for(env: EnvironmentSpec) -> MinimumInService | Rolling:
    """How a change of configuration rolls: minimum in-service on the engine (half the
    instances keep serving unless the spec says), staged rolling on Swarm."""
    if env.target == "engine":
        keep = env.rollout.min_in_service
        if keep is None:
            keep = max(1, env.replicas // 2) if env.replicas >= 2 else 0
        return MinimumInService(
            replicas=env.replicas, min_in_service=keep, drain_timeout=env.rollout.drain_timeout
        )
    return Rolling(
        replicas=env.replicas,
        stages=tuple(env.rollout.stages),
        drain_timeout=env.rollout.drain_timeout,
    )


def _create_networks(client: Any, plan: InfraPlan, log: Log) -> None:
    for name in plan.create_networks:
        swarm = plan.target == "swarm"
        if create_network(client, name, plan.service, plan.environment, swarm=swarm):
            log(f"created network {name}")


def _router(client: Any, plan: InfraPlan, log: Log) -> HaproxyRouter:
    from docker_delivery.routing.service import ensure_router

    assert plan.spec is not None
    handle = ensure_router(
        client,
        plan.service,
        plan.environment,
        network_name(plan.service, plan.environment),
        plan.spec.router.settings(),
        app_port=plan.spec.port,
        health_path=plan.spec.health_check.path,
        log=log,
    )
    return handle.router


def _take_out(
    router: Any, instances: Sequence[Any], stop: Callable[[Any], object], timeout: float
) -> None:
    """``instances`` out of the router's ``live`` backend (:func:`.strategies.drain.take_out`),
    stopped once their requests in flight have finished."""
    slots = {f"{s.address}:{s.port}": s.slot for s in router.servers("live") if s.assigned}
    take_out(
        router,
        "live",
        [slots[i.address] for i in instances if i.address in slots],
        timeout=timeout,
        stop=lambda: [stop(inst) for inst in instances],
    )


def _scale_down(client: Any, plan: InfraPlan, keep: int, log: Log) -> None:
    """Fewer instances without a roll (Swarm; and replicas 0 on the engine): drained first."""
    from docker_delivery.targets.engine import EngineTarget

    assert plan.spec is not None
    router = _router(client, plan, log)
    grace = plan.spec.stop_grace
    timeout = plan.spec.rollout.drain_timeout
    if plan.target == "engine":
        engine = EngineTarget(client, port=plan.spec.port, log=log)
        instances = engine.instances(plan.service, plan.environment)[keep:]
        _take_out(router, instances, lambda i: engine.stop(i, grace=grace), timeout)
        for inst in instances:
            engine.remove(inst)
        return
    swarm = SwarmTarget(client, log=log)
    services = [s for s in swarm.services(plan.service, plan.environment) if s.replicas]
    tasks = [t for s in services for t in swarm.tasks(s.name)]
    victims = sorted(tasks, key=lambda t: -t.slot)[: max(0, len(tasks) - keep)]
    if victims:
        swarm.require_node_engines("scaling in")
    _take_out(router, victims, lambda t: swarm.stop_task(t, grace=grace), timeout)
    for svc in services:
        left = len([t for t in tasks if t.swarm_service == svc.name and t not in victims])
        swarm.scale(svc.name, left)


def _fix_in_place(client: Any, plan: InfraPlan, log: Log) -> None:
    """Engine containers whose networks or limits were changed by hand: back to the spec."""
    assert plan.release is not None
    want = plan.release
    for unit in read_live(client, plan.service, plan.environment, "engine"):
        container = client.containers.get(unit.id)
        for name in sorted(set(want.networks) - unit.networks):
            client.networks.get(name).connect(container)
            log(f"{unit.name}: connected to network {name}")
        for name in sorted(unit.networks - set(want.networks)):
            client.networks.get(name).disconnect(container)
            log(f"{unit.name}: disconnected from network {name}")
        limits = want.limits or Limits()
        update: dict[str, Any] = {}
        if limits.cpus is not None and limits.cpus != unit.limits.cpus:
            update["nano_cpus"] = limits.nano_cpus
        if limits.memory is not None and limits.memory != unit.limits.memory:
            update.update(mem_limit=limits.memory, memswap_limit=2 * limits.memory)
        if update:
            container.update(**update)
            log(f"{unit.name}: limits updated in place ({', '.join(sorted(update))})")


def _remove_unused_secrets(client: Any, service: str, environment: str, log: Log) -> None:
    """Docker secrets this service and environment no longer use (old values)."""
    import docker.errors

    filters = {"label": [f"{LABEL_SERVICE}={service}", f"{LABEL_ENVIRONMENT}={environment}"]}
    used = {
        ref["SecretID"]
        for svc in client.services.list(filters=filters)
        for ref in svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Secrets") or []
    }
    for secret in client.secrets.list(filters=filters):
        if secret.id not in used and (secret.attrs["Spec"].get("Labels") or {}).get(LABEL_MANAGED):
            try:
                secret.remove()
                log(f"removed Docker secret {secret.name} (no longer used)")
            except docker.errors.APIError:
                pass  # still in use: a later apply removes it


def apply(
    client: docker.DockerClient,
    plan: InfraPlan,
    *,
    owner: str,
    lock_wait: float = 0.0,
    log: Log = print,
) -> InfraResult:
    """Make exactly ``plan``'s difference, under the service's deployment lock; the running
    digest never changes (InfraConflict if it changed since the plan was made)."""
    from docker_delivery.strategies.deploy import deploy

    started = time.monotonic()
    result = InfraResult(
        plan.service,
        plan.environment,
        plan.digest,
        changed=not plan.empty,
        summary=plan.summary,
        changes=[c.as_dict() for c in plan.changes],
        notes=list(plan.notes),
    )
    where = f"{plan.service}/{plan.environment}"
    if plan.empty:
        log(f"{where}: no changes")
        return result
    _create_networks(client, plan, log)
    if plan.digest is None or plan.image is None or plan.release is None or plan.spec is None:
        result.duration_s = time.monotonic() - started
        return result
    with DeploymentLock(
        client,
        plan.service,
        plan.environment,
        owner=owner,
        image=plan.image,
        wait=lock_wait,
        log=log,
    ):
        now = main_unit(
            read_live(client, plan.service, plan.environment, plan.target),
            plan.service,
            plan.environment,
        )
        if now is None or now.digest != plan.digest:
            raise InfraConflict(
                f"{where}: the running digest changed since the plan was made ({plan.digest} -> "
                f"{now.digest if now else 'nothing'}); plan again"
            )
        if plan.replicas == 0:
            if (now.group or "live") != "live":
                raise InfraConflict(
                    f"{where}: replicas 0 while the {now.group} colour serves: retire the "
                    "service's traffic first (scaling to 0 drains the live backend only)"
                )
            _scale_down(client, plan, 0, log)
        else:
            if plan.fix:
                _fix_in_place(client, plan, log)
            scales = plan.running != plan.replicas
            if plan.roll or (scales and (plan.target == "engine" or plan.replicas > plan.running)):
                log(f"{where}: {plan.summary}; the same digest again, config {plan.config}")
                deployed = deploy(
                    client,
                    plan.release,
                    strategy_for(plan.spec),
                    router=plan.spec.router.settings(),
                    check=plan.spec.health(),
                    owner=owner,
                    log=log,
                )
                result.replaced = deployed.replaced
            elif scales:
                _scale_down(client, plan, plan.replicas, log)
        if plan.target == "swarm":
            _remove_unused_secrets(client, plan.service, plan.environment, log)
    log(f"{where}: applied {plan.summary}; digest {plan.digest} unchanged")
    result.duration_s = time.monotonic() - started
    return result


def apply_spec(
    client: docker.DockerClient,
    service_spec: ServiceSpec,
    environment: str,
    *,
    owner: str,
    resolve_secret: SecretResolver | None = None,
    lock_wait: float = 0.0,
    plan_only: bool = False,
    log: Log = print,
) -> tuple[InfraPlan, InfraResult | None]:
    """Plan ``environment``'s spec against what runs, log the plan, and apply it (not with
    ``plan_only``). Once something runs, both happen under the service's deployment lock,
    taken first (waiting ``lock_wait`` seconds for another delivery): the plan is made from what
    runs once no other delivery is changing it."""
    service = service_spec.service
    target = service_spec.environment(environment).target
    images = [u.image for u in read_live(client, service, environment, target) if u.image]
    if plan_only or not images:  # nothing runs: no instance to guard (networks are idempotent)
        planned = plan(client, service_spec, environment, resolve_secret=resolve_secret)
        log(f"infrastructure plan:\n{planned.describe()}")
        if plan_only:
            return planned, None
        return planned, apply(client, planned, owner=owner, log=log)
    with DeploymentLock(
        client, service, environment, owner=owner, image=images[0], wait=lock_wait, log=log
    ):
        planned = plan(client, service_spec, environment, resolve_secret=resolve_secret)
        log(f"infrastructure plan:\n{planned.describe()}")
        return planned, apply(client, planned, owner=owner, log=log)
