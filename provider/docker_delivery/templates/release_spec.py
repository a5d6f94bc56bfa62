"""A release: several services delivered as one unit, verified together, undone together.

A release file names the services' own pipeline specs (each with its build, tests, migrations,
environments and each environment's deployment type) and what the release adds: the order
between them, the checks of the whole, and how the DAG runs::

    release:
      name: shop                          # the DAG deliver_shop; release ids shop-<env>-<hash>
      mode: continuous_deployment         # or continuous_delivery, with approve: [production]
      environments: [staging]             # in order; every service's spec has these stages
      services:
        api: {spec: api.yaml}             # relative to this file
        web: {spec: web.yaml, depends_on: [api]}
      checks:                             # after every service of an environment is verified
        - name: web_reaches_api
          http: {service: web, path: /upstream, contains: '"status": 200'}

Per environment, the DAG delivers the services in dependency order (one task group each: infra,
migrate expand, deploy, verify), runs the checks, and only then promotes each service's tag,
retires old colours and contracts databases: until the whole release has passed, every service
can go back the fast way. A failure anywhere rolls back, in reverse order, each service this
release moved, and the ledger's records of the environment share one release id
(:func:`release_id`).

The release's ``mode``, ``schedule``, approvals and ledger apply to the whole DAG; a service
spec's own ``pipeline.mode``, ``trigger``, ``approval`` and ledger are not used here. In a
release each stage has one deployment type (no ``alternatives``), none held for a decision
(``hold_after``, ``hold_before_switch``), on an engine or a Swarm (ECS releases are not
supported yet).

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from docker_delivery.errors import DeliveryError, SpecInvalid
from docker_delivery.images.ref import ImageRef
from docker_delivery.spec.loader import load_yaml, read_source
from docker_delivery.spec.messages import describe_errors
from docker_delivery.templates.pipeline_spec import PipelineSpec, load_pipeline
from docker_delivery.templates.pipeline_spec.sections import (
    ApprovalSpec,
    HttpCheck,
    TaskPolicy,
    _Model,
    _name,
)
from docker_delivery.templates.pipeline_spec.spec import held_at

__all__ = ["ReleaseSpec", "is_release", "load_release", "release_id", "release_source"]

_DAG_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_RELEASE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
RELEASE_POLICY = TaskPolicy(retries=0, retry_delay=0, timeout=3600, exponential_backoff=False)
"""The release's own tasks (checks, the rollback's decision, the record): no retry of their
own; a rolled-back release is delivered again by a new run or a Clear."""


class ReleaseService(_Model):
    """One service of the release: its pipeline spec (relative to the release file), the
    services it needs first, and optionally an image already built (pinned by digest), which
    the release delivers as it is instead of building the spec's."""

    spec: str
    depends_on: list[str] = Field(default_factory=list)
    image: str | None = None


class ReleaseHttpCheck(HttpCheck):
    """A GET on ``service``'s router in the environment (its public URL)."""

    service: str


class ReleaseCheck(_Model):
    """A check of the whole release in each environment, once every service is verified."""

    name: str
    http: ReleaseHttpCheck

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _name(value)


class ReleaseSettings(_Model):
    """The ``release`` section of a release file (see the module docstring)."""

    name: str
    dag_id: str | None = None
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    mode: Literal["continuous_delivery", "continuous_deployment"] = "continuous_delivery"
    schedule: str | None = None
    environments: list[str] = Field(min_length=1)
    approve: list[str] = Field(default_factory=list)
    approval: ApprovalSpec = Field(default_factory=ApprovalSpec)
    services: dict[str, ReleaseService] = Field(min_length=1)
    checks: list[ReleaseCheck] = Field(default_factory=list)
    ledger_conn_id: str | None = None
    ledger: str | None = None

    @field_validator("ledger_conn_id", "ledger", mode="before")
    @classmethod
    def _unset(cls, value: object) -> object:
        return None if value == "" else value


@dataclass(frozen=True)
class ReleaseSpec:
    """A validated release: its settings, and each service's pipeline spec in delivery order
    (dependencies first)."""

    settings: ReleaseSettings
    pipelines: dict[str, PipelineSpec]
    origin: str = "release"

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def dag_id(self) -> str:
        return self.settings.dag_id or "deliver_" + self.name.replace("-", "_")

    @property
    def order(self) -> list[str]:
        """The services, dependencies first."""
        return list(self.pipelines)

    def stage(self, key: str, environment: str) -> Any:
        return next(s for s in self.pipelines[key].pipeline.stages if s.environment == environment)

    def gated(self, environment: str) -> bool:
        return self.settings.mode == "continuous_delivery" and environment in self.settings.approve

    def pinned_image(self, key: str) -> str | None:
        return self.settings.services[key].image


def release_id(name: str, environment: str, dag_id: str, run_id: str) -> str:
    """The id every ledger record of one release in one environment shares: readable, and the
    same for every try of the run (``shop-staging-3f2a9c1e``)."""
    digest = hashlib.sha256(f"{dag_id}\n{run_id}\n{environment}".encode()).hexdigest()
    return f"{name}-{environment}-{digest[:8]}"


def is_release(data: Any) -> bool:
    """Whether loaded YAML data is a release file (its top key is ``release``)."""
    return isinstance(data, Mapping) and "release" in data


def release_source(source: Any) -> bool:
    """Whether ``source`` (what ``delivery_pipeline`` or the CLI is given) is a release: a
    :class:`ReleaseSpec`, a mapping with the key ``release``, or a file or YAML text whose
    top key is ``release``."""
    if isinstance(source, ReleaseSpec):
        return True
    if isinstance(source, Mapping):
        return is_release(source)
    if not isinstance(source, (str, Path)):
        return False
    try:
        text, origin, _ = read_source(source)
        return is_release(load_yaml(text, origin))
    except SpecInvalid:
        return False  # the pipeline loader reports it


def _ordered(services: Mapping[str, ReleaseService]) -> tuple[list[str], list[str]]:
    """(the services dependencies first, listing order kept where free; the problems)."""
    problems: list[str] = []
    for key, service in services.items():
        for need in service.depends_on:
            if need == key:
                problems.append(f"release.services.{key}.depends_on: a service needs itself")
            elif need not in services:
                problems.append(
                    f"release.services.{key}.depends_on: no service {need!r} in this release "
                    f"(it has {', '.join(services)})"
                )
    if problems:
        return list(services), problems
    done: list[str] = []
    while len(done) < len(services):
        ready = [k for k, s in services.items() if k not in done and set(s.depends_on) <= set(done)]
        if not ready:
            cycle = [k for k in services if k not in done]
            return list(services), [
                f"release.services: the dependencies go round in a circle ({', '.join(cycle)})"
            ]
        done.append(ready[0])
    return done, []


def _service_problems(key: str, spec: PipelineSpec, settings: ReleaseSettings) -> list[str]:
    at = f"release.services.{key}"
    out: list[str] = []
    staged = [s.environment for s in spec.pipeline.stages]
    if staged != settings.environments:
        out.append(
            f"{at}.spec: its stages deliver {staged}; the release delivers "
            f"{settings.environments}: give every service the release's environments, in order"
        )
    for stage in spec.pipeline.stages:
        where = f"{at}.spec: pipeline.stages[{stage.environment}]"
        if stage.alternatives:
            out.append(f"{where}.alternatives: a release's stage has one deployment type")
        if held_at(stage.deploy):
            out.append(
                f"{where}.deploy: a release holds no rollout for a decision (hold_after, "
                "hold_before_switch): its checks decide for the whole release"
            )
        if spec.env(stage).target == "ecs":
            out.append(
                f"{where}: a release delivers to engines and Swarms; ECS releases are not "
                "supported yet (deliver an ECS service with its own pipeline)"
            )
    image = settings.services[key].image
    if image is not None:
        try:
            ImageRef.parse(image).require_pinned()
        except DeliveryError as exc:
            out.append(f"{at}.image: {exc}")
    return out


def _problems(settings: ReleaseSettings, pipelines: Mapping[str, PipelineSpec]) -> list[str]:
    out: list[str] = []
    if not _RELEASE_NAME.match(settings.name):
        out.append(
            "release.name: 1-40 lower-case letters, digits and '-' (it names the DAG and the "
            "release ids)"
        )
    if settings.dag_id is not None and not _DAG_ID.match(settings.dag_id):
        out.append("release.dag_id: use letters, digits, '_', '.' and '-' (1-250)")
    for key in settings.services:
        try:
            _name(key)
        except ValueError as exc:
            out.append(f"release.services.{key}: {exc}")
    if len(set(settings.environments)) != len(settings.environments):
        out.append("release.environments: an environment is listed twice")
    for env in settings.approve:
        if env not in settings.environments:
            out.append(f"release.approve: {env!r} is not one of release.environments")
    if settings.mode == "continuous_delivery" and not settings.approve:
        out.append(
            "release.mode: continuous_delivery needs approve: [<environment>...] (the "
            "environments a human gates); with no gate, set mode: continuous_deployment"
        )
    if settings.mode == "continuous_deployment" and settings.approve:
        out.append("release.approve: continuous_deployment has no approval gates")
    if settings.schedule is not None:
        from croniter import croniter

        from docker_delivery.templates.pipeline_spec.spec import PRESETS

        if settings.schedule not in PRESETS and not croniter.is_valid(settings.schedule):
            out.append("release.schedule: not a cron expression nor a preset (@daily, ...)")
    names = [c.name for c in settings.checks]
    for name in {n for n in names if names.count(n) > 1}:
        out.append(f"release.checks[{name}]: the name {name!r} is given twice")
    for check in settings.checks:
        if check.http.service not in settings.services:
            out.append(
                f"release.checks[{check.name}].http.service: no service "
                f"{check.http.service!r} in this release"
            )
        if check.http.expect_digest:
            out.append(
                f"release.checks[{check.name}].http.expect_digest: a release's check spans "
                "services; check one service's digest in its own spec's verify.smoke"
            )
    ports: dict[tuple[str, int], str] = {}
    for key, spec in pipelines.items():
        out += _service_problems(key, spec, settings)
        for env_name, env_spec in spec.environments.items():
            router = env_spec.router
            for field, port in (("port", router.port), ("preview_port", router.preview_port)):
                if port is None:
                    continue
                other = ports.setdefault((env_name, port), f"{key}'s {field}")
                if other != f"{key}'s {field}":
                    out.append(
                        f"release.services.{key}.spec: environments.{env_name}.router.{field} "
                        f"{port} is also {other} in {env_name}: each router needs its own ports"
                    )
    services = [s.service for s in pipelines.values()]
    for name in {s for s in services if services.count(s) > 1}:
        out.append(f"release.services: two specs deliver the service {name!r}")
    return out


def load_release(
    source: str | Path | Mapping[str, Any] | ReleaseSpec,
    *,
    environ: Mapping[str, str] | None = None,
) -> ReleaseSpec:
    """A validated :class:`ReleaseSpec` from a release file (or YAML text, or a mapping whose
    services' ``spec`` is a path, or the service's pipeline spec as a mapping). Raises
    :class:`SpecInvalid` listing every problem with its field path, the services' own
    included (``release.services.web.spec: ...``)."""
    from docker_delivery.templates.pipeline_spec.loading import _substitute

    if isinstance(source, ReleaseSpec):
        return source
    base = Path.cwd()
    if isinstance(source, Mapping):
        data: Any = source
        origin = "release"
    else:
        text, origin, where = read_source(source)
        base = where or base
        data = load_yaml(text, origin)
    if not is_release(data):
        raise SpecInvalid(origin, ["release: required: the services, their order and checks"])
    problems: list[str] = []
    section = _substitute(
        data["release"], "release", os.environ if environ is None else environ, problems
    )
    unknown = [k for k in data if k != "release"]
    problems += [f"{k}: unknown key (a release file has one key, release)" for k in unknown]
    if problems:
        raise SpecInvalid(origin, problems)
    raw_services = section.get("services") if isinstance(section, Mapping) else None
    given: dict[str, Any] = {}
    if isinstance(raw_services, Mapping):  # a service's spec may be given inline (a mapping)
        section = dict(section)
        section["services"] = {}
        for key, entry in raw_services.items():
            if isinstance(entry, Mapping) and isinstance(entry.get("spec"), Mapping):
                given[str(key)] = entry["spec"]
                entry = {**entry, "spec": f"<{key}>"}
            section["services"][key] = entry
    try:
        settings = ReleaseSettings.model_validate(section)
    except ValidationError as exc:
        raise SpecInvalid(
            origin, describe_errors(exc, section, ReleaseSettings, "release")
        ) from None
    order, problems = _ordered(settings.services)
    pipelines: dict[str, PipelineSpec] = {}
    for key in order:
        entry = settings.services[key]
        source_of: Any = given[key] if key in given else base / entry.spec
        try:
            pipelines[key] = load_pipeline(source_of, environ=environ)
        except SpecInvalid as exc:
            problems += [f"release.services.{key}.spec ({entry.spec}): {p}" for p in exc.problems]
    if problems:
        raise SpecInvalid(origin, problems)
    problems = _problems(settings, pipelines)
    if problems:
        raise SpecInvalid(origin, problems)
    return ReleaseSpec(settings, pipelines, origin)
