"""The plan of an infrastructure change: the differences between an environment's spec and what
runs (replicas, variables, secrets by fingerprint, networks, limits), printable with secrets
masked. Nothing is changed.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from docker_delivery.errors import InfraConflict as InfraConflict
from docker_delivery.infra.live import LiveUnit, read_live
from docker_delivery.spec import EnvironmentSpec, SecretResolver, ServiceSpec
from docker_delivery.targets.base import Limits, Release
from docker_delivery.targets.engine import network_exists

if TYPE_CHECKING:
    import docker

MASK = "***"


Kind = Literal["replicas", "env", "secret", "network", "limits", "config"]


Action = Literal["add", "change", "remove", "scale", "roll", "create", "fix"]


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
class Wanted:
    """What the spec wants, in the terms :class:`LiveUnit` is read in. A secret's fingerprint
    is None when its value was not resolved (then only its presence and exposure count)."""

    env: Mapping[str, str]
    secrets: Mapping[str, tuple[str, str | None]]  # name -> (expose, fingerprint or None)
    sources: Mapping[str, str]
    networks: frozenset[str]
    limits: Limits
    replicas: int

    @classmethod
    def of(cls, env: EnvironmentSpec, release: Release | None) -> Wanted:
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


def one_value(values: set[str | None]) -> str | None:
    if len(values) == 1:
        (value,) = values
        return None if value is None else repr(value)
    return "mixed: " + " | ".join(sorted(_show(v) for v in values))


def size_text(memory: int | None) -> str | None:
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


def spec_differences(units: Sequence[LiveUnit], wanted: Wanted) -> list[Change]:
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
            out.append(Change("env", name, _action(have, want), one_value(have), after))
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
            fmt = size_text if attr == "memory" else (lambda v: None if v is None else f"{v:g}")
            before = " | ".join(sorted(fmt(v) or "none" for v in have_l))
            out.append(Change("limits", attr, "change", before, fmt(want_l) or "none"))
    return out


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


def main_unit(units: Sequence[LiveUnit], service: str, environment: str) -> LiveUnit | None:
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
    main = main_unit(units, service, environment)
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
    changes = spec_differences(units, Wanted.of(env, release))
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
