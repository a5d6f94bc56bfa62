"""Infrastructure changes: what differs between an environment's spec and what runs, made good
without changing the running digest.

:func:`plan` reads what runs (the labels, config, secret files, networks and limits of the
service's containers on the engine, or of its services on Swarm) and compares it with the
environment's spec (:mod:`docker_delivery.spec`): replicas, env variables, secrets (compared by
fingerprint, never shown), networks and resource limits. The :class:`InfraPlan` prints with
secret values masked (``***``) and has a masked :meth:`InfraPlan.as_dict` for XCom.

:func:`apply` makes that difference and nothing else. The digest is read from the running
instances and released again with the spec's configuration (``ServiceSpec.release_for``): every
change that needs new instances (env variables, secrets, networks, limits) rolls them through
the same strategies as a deploy, minimum in-service on the engine and the staged rolling
deployment on Swarm, drained at the router, so it drops no request; a change of replicas scales;
an instance whose own configuration label matches the spec but whose networks or limits were
changed by hand on the engine is corrected in place (``network connect/disconnect``,
``container.update``), without a restart. Nothing to do is a success that says so.

Why config changes roll instead of updating containers in place: an instance's configuration
(``io.docker-delivery.config``, also in its name) is a label, and labels cannot change on a
running container; updated in place, an instance would claim a configuration it no longer runs,
and the strategies, which trust that label, would later skip or needlessly replace it.

:func:`drift` compares two environments' live state with each other and with their specs.

Secrets reach containers as files, ``/run/secrets/<NAME>`` with ``<NAME>_FILE`` pointing at it:
on Swarm as Docker secrets (named after a fingerprint of the value, so a new value is a new
secret and a roll; unused ones are removed after it), on the engine copied into the container
(``put_archive``) before it starts; or as the variable ``<NAME>`` where the spec says
``expose: env``. Values never go into a label, the plan, its dict (XCom) or a log line; they are
compared by fingerprint (PBKDF2, see ``targets.base.secret_fingerprint``). Where a value stays
visible: inside the container (by design); on the engine, in the container's writable layer
(``docker cp``/``export``, root on the host under the overlay2 directory) until the container is
removed; with ``expose: env``, in ``docker inspect`` / ``docker service inspect`` (``Env``).
A file secret is not in ``docker inspect`` at all.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from docker_delivery.errors import InfraConflict as InfraConflict
from docker_delivery.spec import EnvironmentSpec, SecretResolver, ServiceSpec
from docker_delivery.strategies.drain import take_out
from docker_delivery.strategies.lock import DeploymentLock
from docker_delivery.strategies.min_in_service import MinimumInService
from docker_delivery.strategies.rolling import Rolling
from docker_delivery.targets.base import (
    SECRETS_DIR,
    Limits,
    Release,
    docker_secret_fingerprint,
    secret_fingerprint,
)
from docker_delivery.targets.engine import create_network, network_exists, network_name
from docker_delivery.targets.engine_errors import docker_errors
from docker_delivery.targets.inventory import Inventory
from docker_delivery.targets.labels import (
    LABEL_CONFIG,
    LABEL_DIGEST,
    LABEL_ENV_KEYS,
    LABEL_ENVIRONMENT,
    LABEL_IMAGE,
    LABEL_MANAGED,
    LABEL_SECRET_KEYS,
    LABEL_SERVICE,
    LABEL_SLOT_GROUP,
)
from docker_delivery.targets.swarm import SwarmTarget

if TYPE_CHECKING:
    import docker

__all__ = [
    "MASK",
    "Change",
    "Difference",
    "DriftReport",
    "InfraConflict",
    "InfraPlan",
    "InfraResult",
    "LiveUnit",
    "apply",
    "apply_spec",
    "drift",
    "plan",
    "read_live",
]

MASK = "***"
Log = Callable[[str], None]
Kind = Literal["replicas", "env", "secret", "network", "limits", "config"]
Action = Literal["add", "change", "remove", "scale", "roll", "create", "fix"]


# --------------------------------------------------------------------------------------------
# What runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveUnit:
    """One container (engine) or one Swarm service (``count`` tasks) of a service, as it runs.

    ``secrets`` maps a name to how it is exposed and 12 digits of its fingerprint;
    ``networks`` are those beyond the service's own network."""

    name: str
    id: str
    digest: str
    image: str
    config: str
    group: str
    count: int
    env: Mapping[str, str]
    secrets: Mapping[str, tuple[str, str]]
    networks: frozenset[str]
    limits: Limits


def _env_map(items: Iterable[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items if "=" in item)


def _secret_keys(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    raw = labels.get(LABEL_SECRET_KEYS, "")
    return [tuple(p.split(":", 1)) for p in raw.split(",") if ":" in p]  # type: ignore[misc]


def _limits(nano_cpus: int | None, memory: int | None) -> Limits:
    return Limits(cpus=nano_cpus / 1e9 if nano_cpus else None, memory=memory or None)


def _read_file(container: Any, path: str) -> str | None:
    import docker.errors

    try:
        chunks, _stat = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.next()
            handle = tar.extractfile(member) if member is not None else None
            return handle.read().decode() if handle is not None else None
    except docker.errors.NotFound:
        return None


def _release_env(
    client: Any, labels: Mapping[str, str], env: Mapping[str, str], image: str
) -> dict[str, str]:
    keys = labels.get(LABEL_ENV_KEYS)
    if keys is not None:
        return {k: env[k] for k in keys.split(",") if k and k in env}
    # Started before the env-keys label: what the image does not set itself.
    baked = _env_map(client.images.get(image).attrs["Config"].get("Env") or [])
    skip = {"APP_DIGEST"} | {f"{n}_FILE" for n, _ in _secret_keys(labels)}
    return {k: v for k, v in env.items() if baked.get(k) != v and k not in skip}


def _engine_units(client: Any, service: str, environment: str) -> list[LiveUnit]:
    """The configuration each running container of the inventory runs with."""
    own = network_name(service, environment)
    units = []
    for instance in Inventory(client).instances(service, environment):
        try:
            container = client.containers.get(instance.id)
        except docker_errors().NotFound:
            continue  # removed since it was listed
        attrs = container.attrs
        env = _env_map(attrs["Config"].get("Env") or [])
        secrets = {}
        for name, expose in _secret_keys(instance.labels):
            value = (
                env.get(name) if expose == "env" else _read_file(container, f"{SECRETS_DIR}/{name}")
            )
            fp = "missing"
            if value is not None:
                fp = secret_fingerprint(value, service=service, environment=environment, name=name)
            secrets[name] = (expose, fp[:12])
        host = attrs.get("HostConfig") or {}
        units.append(
            LiveUnit(
                name=instance.name,
                id=instance.id,
                digest=instance.digest,
                image=instance.image,
                config=instance.config,
                group=instance.labels.get(LABEL_SLOT_GROUP, ""),
                count=1,
                env=_release_env(client, instance.labels, env, attrs["Image"]),
                secrets=secrets,
                networks=frozenset(attrs["NetworkSettings"].get("Networks") or {}) - {own},
                limits=_limits(host.get("NanoCpus"), host.get("Memory")),
            )
        )
    return sorted(units, key=lambda u: u.name)


def _swarm_units(client: Any, service: str, environment: str) -> list[LiveUnit]:
    own = network_name(service, environment)
    net_names: dict[str, str] = {}
    units = []
    for svc in Inventory(client).swarm_services(service, environment):
        spec = svc.attrs["Spec"]
        labels = spec.get("Labels") or {}
        task = spec.get("TaskTemplate") or {}
        container = task.get("ContainerSpec") or {}
        env = _env_map(container.get("Env") or [])
        secrets: dict[str, tuple[str, str]] = {}
        for ref in container.get("Secrets") or []:
            name, secret_name = ref["File"]["Name"], ref["SecretName"]
            ours = (client.secrets.get(ref["SecretID"]).attrs["Spec"].get("Labels") or {}).get(
                LABEL_MANAGED
            ) == "true"
            fp = secret_name[-12:] if ours else docker_secret_fingerprint(secret_name)[:12]
            secrets[name] = ("file", fp)
        for name, expose in _secret_keys(labels):
            if expose == "env" and name in env:
                fp = secret_fingerprint(
                    env[name], service=service, environment=environment, name=name
                )
                secrets[name] = ("env", fp[:12])
        nets = set()
        for net in task.get("Networks") or []:
            if net["Target"] not in net_names:
                net_names[net["Target"]] = client.networks.get(net["Target"]).name
            nets.add(net_names[net["Target"]])
        limits = (task.get("Resources") or {}).get("Limits") or {}
        units.append(
            LiveUnit(
                name=spec["Name"],
                id=svc.id,
                digest=labels.get(LABEL_DIGEST, ""),
                image=labels.get(LABEL_IMAGE, ""),
                config=labels.get(LABEL_CONFIG, ""),
                group=labels.get(LABEL_SLOT_GROUP, ""),
                count=int(spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 0)),
                env={k: env[k] for k in labels.get(LABEL_ENV_KEYS, "").split(",") if k in env},
                secrets=secrets,
                networks=frozenset(nets) - {own},
                limits=_limits(limits.get("NanoCPUs"), limits.get("MemoryBytes")),
            )
        )
    return sorted(units, key=lambda u: u.name)


def read_live(
    client: docker.DockerClient, service: str, environment: str, target: str
) -> list[LiveUnit]:
    """The service's containers (``engine``, running ones) or Swarm services (``swarm``, with
    their replicas: a service scaled to 0 is listed with ``count`` 0)."""
    if target == "swarm":
        return _swarm_units(client, service, environment)
    return _engine_units(client, service, environment)


# --------------------------------------------------------------------------------------------
# Differences
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One difference between the spec and what runs; a secret's values are always ``***``."""

    kind: Kind
    name: str
    action: Action
    before: str | None = None
    after: str | None = None
    detail: str = ""

    def describe(self) -> str:
        sign = {"add": "+", "remove": "-", "create": "+"}.get(self.action, "~")
        what = f"{self.kind} {self.name}".strip()
        detail = f" ({self.detail})" if self.detail else ""
        if self.kind == "network" and self.action != "create":
            return f"{sign} {what}{detail}: {self.before} -> {self.after}"
        if self.action == "add":
            value = f": {self.after}" if self.after is not None else ""
            return f"{sign} {what}{detail}{value}"
        if self.action == "remove":
            was = f" (was {self.before})" if self.before is not None else ""
            return f"{sign} {what}{detail}{was}"
        if self.action == "create":
            return f"{sign} {what}: create it{detail}"
        return f"{sign} {what}{detail}: {self.before} -> {self.after}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "before": self.before,
            "after": self.after,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class _Wanted:
    """What the spec wants, in the terms :class:`LiveUnit` is read in. A secret's fingerprint
    is None when its value was not resolved (then only its presence and exposure count)."""

    env: Mapping[str, str]
    secrets: Mapping[str, tuple[str, str | None]]  # name -> (expose, fingerprint or None)
    sources: Mapping[str, str]
    networks: frozenset[str]
    limits: Limits
    replicas: int

    @classmethod
    def of(cls, env: EnvironmentSpec, release: Release | None) -> _Wanted:
        secrets: dict[str, tuple[str, str | None]]
        if release is not None:
            secrets = {s.name: (s.expose, s.fingerprint[:12]) for s in release.secrets}
        else:
            secrets = {s.name: (s.expose, None) for s in env.secrets}
        limits = env.resources.limits() if env.resources else None
        return cls(
            env=dict(env.env),
            secrets=secrets,
            sources={s.name: s.describe() for s in env.secrets},
            networks=frozenset(env.networks),
            limits=limits or Limits(),
            replicas=env.replicas,
        )


def _show(value: str | None) -> str:
    return "unset" if value is None else repr(value)


def _one(values: set[str | None]) -> str | None:
    if len(values) == 1:
        (value,) = values
        return None if value is None else repr(value)
    return "mixed: " + " | ".join(sorted(_show(v) for v in values))


def _size(memory: int | None) -> str | None:
    if memory is None:
        return None
    for unit, size in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if memory % size == 0:
            return f"{memory // size}{unit}"
    return f"{memory}b"


def _action(have: set[Any], want: Any) -> Action:
    if have == {None}:
        return "add"
    return "remove" if want is None else "change"


def _differences(units: Sequence[LiveUnit], wanted: _Wanted) -> list[Change]:
    """What differs, over every running unit (a value that differs among units is "mixed")."""
    running = [u for u in units if u.count > 0]
    out: list[Change] = []
    have_n = sum(u.count for u in running)
    if have_n != wanted.replicas:
        out.append(Change("replicas", "", "scale", str(have_n), str(wanted.replicas)))
    if not running:
        return out
    for name in sorted(set(wanted.env) | {k for u in running for k in u.env}):
        want = wanted.env.get(name)
        have = {u.env.get(name) for u in running}
        if have != {want}:
            after = None if want is None else repr(want)
            out.append(Change("env", name, _action(have, want), _one(have), after))
    for name in sorted(set(wanted.secrets) | {k for u in running for k in u.secrets}):
        want_s = wanted.secrets.get(name)
        have_s: set[tuple[str, str | None] | None] = {u.secrets.get(name) for u in running}
        if want_s is not None and want_s[1] is None:  # value not resolved: exposure only
            have_s = {(h[0], None) if h is not None else None for h in have_s}
        if have_s == {want_s}:
            continue
        exposes = {h[0] for h in have_s if h is not None}
        detail = wanted.sources.get(name, "")
        if want_s is not None and exposes and exposes != {want_s[0]}:
            detail += (
                f"{', ' if detail else ''}exposed as {'/'.join(sorted(exposes))} -> {want_s[0]}"
            )
        elif want_s is not None and None not in have_s:
            detail += f"{', ' if detail else ''}value changed"
        before = MASK if any(h is not None for h in have_s) else None
        out.append(
            Change(
                "secret", name, _action(have_s, want_s), before, MASK if want_s else None, detail
            )
        )
    for name in sorted(wanted.networks | {n for u in running for n in u.networks}):
        want_net = name in wanted.networks
        have_net = {name in u.networks for u in running}
        if have_net != {want_net}:
            before = "connected to some"
            if len(have_net) == 1:
                before = "connected" if True in have_net else "not connected"
            after = "connected" if want_net else "not connected"
            out.append(Change("network", name, "add" if want_net else "remove", before, after))
    for attr in ("cpus", "memory"):
        want_l = getattr(wanted.limits, attr)
        have_l = {getattr(u.limits, attr) for u in running}
        if have_l != {want_l}:
            fmt = _size if attr == "memory" else (lambda v: None if v is None else f"{v:g}")
            before = " | ".join(sorted(fmt(v) or "none" for v in have_l))
            out.append(Change("limits", attr, "change", before, fmt(want_l) or "none"))
    return out


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InfraPlan:
    """What :func:`apply` will do. ``digest``/``image`` are what runs (None when nothing does);
    ``config`` is the configuration id the spec gives that digest; ``roll`` names the units to
    replace, ``fix`` the engine containers to correct in place. The desired release (with the
    secrets' values) is kept out of the printed and dict forms."""

    service: str
    environment: str
    target: str
    digest: str | None
    image: str | None
    running: int
    replicas: int
    config: str
    changes: tuple[Change, ...]
    roll: tuple[str, ...] = ()
    fix: tuple[str, ...] = ()
    create_networks: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    release: Release | None = field(default=None, repr=False, compare=False)
    spec: EnvironmentSpec | None = field(default=None, repr=False, compare=False)

    @property
    def empty(self) -> bool:
        return not self.changes

    @property
    def summary(self) -> str:
        if self.empty:
            return "no changes"
        n = len(self.changes)
        return f"{n} change{'s' if n != 1 else ''}"

    def _mask(self, text: str) -> str:
        """A last guard: any secret value (of 4 characters or more) in ``text`` becomes ***."""
        values = [s.value for s in self.release.secrets if s.value] if self.release else []
        for value in sorted((v for v in values if len(v) >= 4), key=len, reverse=True):
            text = text.replace(value, MASK)
        return text

    def describe(self) -> str:
        """The plan in a few lines, secret values masked."""
        head = f"{self.service}/{self.environment} ({self.target})"
        if self.digest is None:
            lines = [f"{head}: nothing runs"]
        else:
            short = self.digest.split(":", 1)[-1][:12]
            lines = [
                f"{head}: runs {short} x{self.running}; the spec wants x{self.replicas}, "
                f"config {self.config}"
            ]
        if self.empty:
            lines.append("no changes")
        lines += [f"  {c.describe()}" for c in self.changes]
        if self.roll:
            how = "minimum in-service" if self.target == "engine" else "rolling, per Swarm service"
            lines.append(
                f"  => roll {len(self.roll)} {'instance' if self.target == 'engine' else 'service'}"
                f"(s) to config {self.config} ({how}); the digest stays {self.digest}"
            )
        if self.fix:
            lines.append(f"  => correct {len(self.fix)} container(s) in place (no restart)")
        lines += [f"  note: {n}" for n in self.notes]
        return self._mask("\n".join(lines))

    def as_dict(self) -> dict[str, Any]:
        """For XCom: plain values, secret values masked."""
        data = {
            "service": self.service,
            "environment": self.environment,
            "target": self.target,
            "digest": self.digest,
            "image": self.image,
            "replicas": {"running": self.running, "wanted": self.replicas},
            "config": self.config,
            "changes": [c.as_dict() for c in self.changes],
            "roll": list(self.roll),
            "fix": list(self.fix),
            "create_networks": list(self.create_networks),
            "notes": list(self.notes),
            "summary": self.summary,
        }
        masked: dict[str, Any] = _map_strings(data, self._mask)
        return masked


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


def _main_digest(units: Sequence[LiveUnit], service: str, environment: str) -> LiveUnit | None:
    """The unit whose digest runs. Refused: several digests, several groups (a blue/green
    deployment not retired yet, an A/B test). One blue/green colour alone is fine: the roll
    replaces its instances in place (minimum in-service in the colour that serves)."""
    running = [u for u in units if u.count > 0] or list(units)
    groups = sorted({u.group or "live" for u in running})
    if len(groups) > 1 or groups == ["ab"]:
        raise InfraConflict(
            f"{service}/{environment} serves in the {', '.join(groups)} groups of a blue/green "
            "or A/B deployment; finish it (switch and retire, or stop the test) first, or deliver "
            "the change with a blue/green deployment of the same digest (ServiceSpec.release_for)"
        )
    digests = sorted({u.digest for u in running})
    if len(digests) > 1:
        raise InfraConflict(
            f"{service}/{environment} runs several digests ({', '.join(digests)}): a deployment "
            "is under way; finish or roll it back, then apply the infrastructure change"
        )
    return running[0] if running else None


def _missing_networks(client: Any, names: Iterable[str]) -> list[str]:
    return [n for n in names if not network_exists(client, n)]


def plan(
    client: docker.DockerClient,
    service_spec: ServiceSpec,
    environment: str,
    *,
    resolve_secret: SecretResolver | None = None,
) -> InfraPlan:
    """The difference between ``environment``'s spec and what runs. Secrets are read through
    ``resolve_secret`` (compared by fingerprint). Nothing is changed."""
    env = service_spec.environment(environment)
    service = service_spec.service
    units = read_live(client, service, environment, env.target)
    main = _main_digest(units, service, environment)
    create = tuple(_missing_networks(client, env.networks))
    creates = tuple(Change("network", n, "create") for n in create)
    if main is None:
        return InfraPlan(
            service,
            environment,
            env.target,
            None,
            None,
            0,
            env.replicas,
            "",
            creates,
            create_networks=create,
            notes=(
                "nothing runs here yet: the spec applies with the first deployment "
                "(ServiceSpec.release_for gives it its configuration)",
            ),
            spec=env,
        )
    release = service_spec.release_for(environment, main.image, resolve_secret=resolve_secret)
    changes = _differences(units, _Wanted.of(env, release))
    running = [u for u in units if u.count > 0]
    roll = tuple(u.name for u in running if u.config != release.config_id)
    notes: list[str] = []
    config_kinds = {"env", "secret", "network", "limits"}
    if roll and not any(c.kind in config_kinds for c in changes):
        changes.append(
            Change(
                "config",
                "",
                "roll",
                running[0].config,
                release.config_id,
                "command, port or the configuration's form differ",
            )
        )
    fix: tuple[str, ...] = ()
    drifted = [c for c in changes if c.kind in config_kinds]
    if drifted and not roll:  # labels say the spec's config: changed by hand since
        if env.target == "engine" and all(c.kind in ("network", "limits") for c in drifted):
            fix = tuple(u.name for u in running)
            changes = [
                Change(c.kind, c.name, "fix", c.before, c.after, c.detail) if c in drifted else c
                for c in changes
            ]
        else:
            notes.append(
                "changed by hand since it was released (its configuration label matches the "
                "spec): not corrected here; redeploy it to correct"
            )
            changes = [c for c in changes if c not in drifted]
    if roll and env.target == "engine" and env.replicas == 1:
        notes.append("one instance: it is replaced with no other serving (give replicas >= 2)")
    if env.replicas == 0 and running:
        notes.append("replicas 0: every instance is drained from the router and removed")
    return InfraPlan(
        service,
        environment,
        env.target,
        main.digest,
        main.image,
        sum(u.count for u in running),
        env.replicas,
        release.config_id,
        (*creates, *changes),
        roll=roll,
        fix=fix,
        create_networks=create,
        notes=tuple(notes),
        release=release,
        spec=env,
    )


# --------------------------------------------------------------------------------------------
# Applying it
# --------------------------------------------------------------------------------------------


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
        return {
            "service": self.service,
            "environment": self.environment,
            "digest": self.digest,
            "changed": self.changed,
            "summary": self.summary,
            "changes": self.changes,
            "replaced": self.replaced,
            "notes": self.notes,
            "duration_s": round(self.duration_s, 3),
        }


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


def _router(client: Any, plan: InfraPlan, log: Log) -> Any:
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
        now = _main_digest(
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


# --------------------------------------------------------------------------------------------
# Drift between environments
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """An item whose live state differs between two environments. ``declared``: the spec
    gives the two environments different values for it (or, for the digest, a promotion is
    under way); otherwise it is drift."""

    item: str
    a: str | None
    b: str | None
    declared: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "a": self.a,
            "b": self.b,
            "declared": self.declared,
            "note": self.note,
        }


@dataclass(frozen=True)
class DriftReport:
    """Two environments compared: ``differences`` between their live states, and, per
    environment, ``off_spec``: how its live state differs from its own spec."""

    service: str
    env_a: str
    env_b: str
    differences: tuple[Difference, ...]
    off_spec: Mapping[str, tuple[Change, ...]]

    @property
    def undeclared(self) -> list[Difference]:
        return [d for d in self.differences if not d.declared]

    @property
    def drifted(self) -> bool:
        return bool(self.undeclared) or any(self.off_spec.values())

    def describe(self) -> str:
        head = f"{self.service}: {self.env_a} vs {self.env_b}: "
        lines = [head + ("drift" if self.drifted else "no drift beyond the declared differences")]
        for d in self.differences:
            tag = "declared" if d.declared else "DRIFT"
            note = f" ({d.note})" if d.note else ""
            lines.append(f"  [{tag}] {d.item}: {self.env_a}={d.a} {self.env_b}={d.b}{note}")
        for env, changes in self.off_spec.items():
            for c in changes:
                lines.append(f"  [off spec] {env}: {c.describe()}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "environments": [self.env_a, self.env_b],
            "drifted": self.drifted,
            "differences": [d.as_dict() for d in self.differences],
            "off_spec": {env: [c.as_dict() for c in cs] for env, cs in self.off_spec.items()},
        }


def _live_items(units: Sequence[LiveUnit]) -> dict[str, str | None]:
    running = [u for u in units if u.count > 0]
    items: dict[str, str | None] = {"replicas": str(sum(u.count for u in running))}
    for name in {k for u in running for k in u.env}:
        items[f"env {name}"] = _one({u.env.get(name) for u in running})
    for name in {k for u in running for k in u.secrets}:
        items[f"secret {name}"] = "/".join(
            sorted({u.secrets[name][0] if name in u.secrets else "none" for u in running})
        )
    for name in {n for u in running for n in u.networks}:
        items[f"network {name}"] = _one(
            {"connected" if name in u.networks else None for u in running}
        )
    items["limits cpus"] = (
        _one({None if u.limits.cpus is None else f"{u.limits.cpus:g}" for u in running})
        if running
        else None
    )
    items["limits memory"] = _one({_size(u.limits.memory) for u in running}) if running else None
    return items


def _spec_items(env: EnvironmentSpec) -> dict[str, str | None]:
    limits = env.resources.limits() if env.resources else None
    items: dict[str, str | None] = {"replicas": str(env.replicas)}
    items.update({f"env {k}": repr(v) for k, v in env.env.items()})
    items.update({f"secret {s.name}": f"{s.expose} {s.describe()}" for s in env.secrets})
    items.update({f"network {n}": "connected" for n in env.networks})
    items["limits cpus"] = None if limits is None or limits.cpus is None else f"{limits.cpus:g}"
    items["limits memory"] = None if limits is None else _size(limits.memory)
    items["router port"] = str(env.router.port)
    return items


def _router_port(client: Any, service: str, environment: str) -> str | None:
    import docker.errors

    from docker_delivery.routing.service import LIVE_PORT, router_name

    try:
        ports = client.containers.get(router_name(service, environment)).attrs["NetworkSettings"][
            "Ports"
        ]
    except docker.errors.NotFound:
        return None
    bound = (ports or {}).get(f"{LIVE_PORT}/tcp") or []
    return str(bound[0]["HostPort"]) if bound else None


def drift(
    client: docker.DockerClient,
    service_spec: ServiceSpec,
    env_a: str,
    env_b: str,
    *,
    resolve_secret: SecretResolver | None = None,
) -> DriftReport:
    """Compare two environments: what differs between their live states beyond the differences
    the spec declares (what one environment overrides differently from the other: replicas,
    secret references, router ports, ...), and how each differs from its own spec. Secret
    values are never compared across environments (they are meant to differ); against the spec
    they are compared by fingerprint when ``resolve_secret`` is given."""
    service = service_spec.service
    specs = {e: service_spec.environment(e) for e in (env_a, env_b)}
    units = {e: read_live(client, service, e, specs[e].target) for e in (env_a, env_b)}
    live = {e: _live_items(units[e]) for e in (env_a, env_b)}
    for e in (env_a, env_b):
        live[e]["router port"] = _router_port(client, service, e)
    wanted = {e: _spec_items(specs[e]) for e in (env_a, env_b)}
    differences = []
    for item in sorted(set(live[env_a]) | set(live[env_b])):
        a, b = live[env_a].get(item), live[env_b].get(item)
        if a != b:
            declared = wanted[env_a].get(item) != wanted[env_b].get(item)
            differences.append(Difference(item, a, b, declared))
    digests = {e: sorted({u.digest[7:19] for u in units[e] if u.count > 0}) for e in (env_a, env_b)}
    if digests[env_a] != digests[env_b]:
        differences.append(
            Difference(
                "digest",
                ",".join(digests[env_a]) or None,
                ",".join(digests[env_b]) or None,
                True,
                "different releases: a promotion is under way",
            )
        )
    off_spec = {}
    for e in (env_a, env_b):
        running = [u for u in units[e] if u.count > 0]
        release = None
        if running and resolve_secret is not None:
            release = service_spec.release_for(e, running[0].image, resolve_secret=resolve_secret)
        wanted_e = _Wanted.of(specs[e], release)
        off_spec[e] = tuple(_differences(units[e], wanted_e)) if running else ()
    return DriftReport(service, env_a, env_b, tuple(differences), off_spec)
