"""Drift between environments: two environments' live states compared with each other and with their
specs; what differs beyond what the specs declare is drift (secrets by fingerprint only).

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docker_delivery.infra.live import LiveUnit, read_live
from docker_delivery.infra.plan import Change, Wanted, one_value, size_text, spec_differences
from docker_delivery.spec import EnvironmentSpec, SecretResolver, ServiceSpec

if TYPE_CHECKING:
    import docker


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
        items[f"env {name}"] = one_value({u.env.get(name) for u in running})
    for name in {k for u in running for k in u.secrets}:
        items[f"secret {name}"] = "/".join(
            sorted({u.secrets[name][0] if name in u.secrets else "none" for u in running})
        )
    for name in {n for u in running for n in u.networks}:
        items[f"network {name}"] = one_value(
            {"connected" if name in u.networks else None for u in running}
        )
    items["limits cpus"] = (
        one_value({None if u.limits.cpus is None else f"{u.limits.cpus:g}" for u in running})
        if running
        else None
    )
    items["limits memory"] = (
        one_value({size_text(u.limits.memory) for u in running}) if running else None
    )
    return items


def _spec_items(env: EnvironmentSpec) -> dict[str, str | None]:
    limits = env.resources.limits() if env.resources else None
    items: dict[str, str | None] = {"replicas": str(env.replicas)}
    items.update({f"env {k}": repr(v) for k, v in env.env.items()})
    items.update({f"secret {s.name}": f"{s.expose} {s.describe()}" for s in env.secrets})
    items.update({f"network {n}": "connected" for n in env.networks})
    items["limits cpus"] = None if limits is None or limits.cpus is None else f"{limits.cpus:g}"
    items["limits memory"] = None if limits is None else size_text(limits.memory)
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
        wanted_e = Wanted.of(specs[e], release)
        off_spec[e] = tuple(spec_differences(units[e], wanted_e)) if running else ()
    return DriftReport(service, env_a, env_b, tuple(differences), off_spec)
