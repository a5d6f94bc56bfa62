"""What runs, as an infrastructure change compares it with the spec: each container's (engine) or
Swarm service's configuration (variables, secrets by fingerprint, networks, limits), read from
the inventory's listing.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docker_delivery.targets.base import (
    SECRETS_DIR,
    Limits,
    docker_secret_fingerprint,
    secret_fingerprint,
)
from docker_delivery.targets.engine import network_name
from docker_delivery.targets.engine_errors import docker_errors
from docker_delivery.targets.inventory import Inventory
from docker_delivery.targets.labels import (
    LABEL_CONFIG,
    LABEL_DIGEST,
    LABEL_ENV_KEYS,
    LABEL_IMAGE,
    LABEL_MANAGED,
    LABEL_SECRET_KEYS,
    LABEL_SLOT_GROUP,
)

if TYPE_CHECKING:
    import docker


Log = Callable[[str], None]


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
