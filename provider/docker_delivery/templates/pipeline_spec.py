"""The pipeline spec: one YAML file (or this pydantic model) from which `delivery_pipeline` makes
a whole delivery DAG.

A pipeline spec *is* a service spec (:class:`docker_delivery.spec.ServiceSpec`: ``service``,
``image``, ``defaults``, ``environments``: how the service runs in each environment) with one
more key, ``pipeline``: how a commit gets there::

    service: web
    image: 127.0.0.1:5000/shop/web            # the repository the pipeline builds and promotes
    defaults: {port: 8080, replicas: 2, health_check: {path: /health, interval: 0.5}}
    environments:
      staging: {target: swarm, router: {port: 18181}}
      production: {router: {port: 18182, preview_port: 18183}}
    pipeline:
      mode: continuous_delivery              # an approval before gated stages
      trigger: {schedule: null}              # manual runs: params revision or image
      build: {context: ../app}               # relative to this file
      tests:                                 # in the image, by digest, in parallel
        - {name: unit, command: [python3, -m, pytest, -q]}
      stages:                                # one per environment, in order
        - environment: staging
          deploy: {type: rolling, stages: [1, "100%"]}
        - environment: production
          approval: true
          deploy: {type: blue_green, scale_down_delay: 60}
          verify: {smoke: [{name: version, http: {path: /version, expect_digest: true}}]}

String values may use ``${NAME}`` or ``${NAME:-default}``: the process environment, read when
the spec is loaded (``$$`` is a literal ``$``). :func:`load_pipeline` validates everything
before a DAG exists and raises :class:`~docker_delivery.spec.SpecInvalid`, whose ``problems``
are one ``field.path: message`` line each.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from docker_delivery.errors import DeliveryError, SpecInvalid
from docker_delivery.images.ref import ImageRef
from docker_delivery.spec import EnvironmentSpec, ServiceSpec, load_spec, looks_secret
from docker_delivery.spec.loader import load_yaml, read_source
from docker_delivery.spec.messages import describe_errors, item_name, join_path
from docker_delivery.spec.service import UrlPath
from docker_delivery.strategies.settings import (
    ABTest,
    BlueGreen,
    MinimumInService,
    Rolling,
    validating_a_spec,
)

__all__ = [
    "DEFAULT_POLICIES",
    "DEPLOY_TARGETS",
    "ABDeploy",
    "ApprovalSpec",
    "BlueGreenDeploy",
    "BuildSpec",
    "HttpCheck",
    "MigrationsSpec",
    "MinInServiceDeploy",
    "PipelineSettings",
    "PipelineSpec",
    "RollingDeploy",
    "SmokeTest",
    "SpecInvalid",
    "StageSpec",
    "TaskPolicy",
    "TestSpec",
    "TriggerSpec",
    "VerifySpec",
    "load_pipeline",
]

DeployType = Literal["min_in_service", "rolling", "blue_green", "ab"]
DEPLOY_TARGETS: dict[str, tuple[str, ...]] = {
    "min_in_service": ("engine",),
    "rolling": ("swarm",),
    "blue_green": ("engine", "swarm"),
    "ab": ("engine", "swarm"),
}
"""Where each deployment type runs (the environment's ``target``)."""

TaskKind = Literal[
    "control",
    "approval",
    "build",
    "test",
    "promote",
    "infra",
    "migrate",
    "deploy",
    "verify",
    "retire",
    "record",
]
PRESETS = frozenset({"@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"})

_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,39}$")
_DAG_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name (1-40 lower-case letters, digits or '_'; it becomes "
            "part of a task id)"
        )
    return value


Seconds = Annotated[float, Field(ge=0)]
PositiveSeconds = Annotated[float, Field(gt=0)]


# -- tasks: retries and timeouts -------------------------------------------------------------


class TaskPolicy(_Model):
    """Retries and timeout of one kind of task. ``timeout`` None: the task's own default."""

    retries: int | None = Field(default=None, ge=0, le=10)
    retry_delay: Seconds | None = None
    timeout: PositiveSeconds | None = None
    exponential_backoff: bool | None = None


DEFAULT_POLICIES: dict[str, TaskPolicy] = {
    # what to deliver, and the digest-pinned image the stages use: quick, local
    "control": TaskPolicy(retries=1, retry_delay=5, timeout=300, exponential_backoff=False),
    # a human's answer; how long it may take is pipeline.approval.timeout
    "approval": TaskPolicy(retries=0, retry_delay=0, timeout=None, exponential_backoff=False),
    # a registry hiccup should not fail a delivery: registry steps are retried; each is
    # idempotent (a build finds its image, a promotion finds the tag moved already)
    "build": TaskPolicy(retries=2, retry_delay=30, timeout=3600, exponential_backoff=True),
    "promote": TaskPolicy(retries=3, retry_delay=10, timeout=600, exponential_backoff=True),
    # a failing test is a finding, not a hiccup
    "test": TaskPolicy(retries=0, retry_delay=30, timeout=None, exponential_backoff=False),
    "infra": TaskPolicy(retries=1, retry_delay=30, timeout=1800, exponential_backoff=False),
    # one transaction per migration; a failure is for a human to read
    "migrate": TaskPolicy(retries=0, retry_delay=60, timeout=None, exponential_backoff=False),
    # never retried by itself: a failed deploy has rolled back (or paused); releasing the same
    # digest again needs a human: "Clear" in the UI
    "deploy": TaskPolicy(retries=0, retry_delay=60, timeout=3600, exponential_backoff=False),
    "verify": TaskPolicy(retries=0, retry_delay=30, timeout=600, exponential_backoff=False),
    "retire": TaskPolicy(retries=2, retry_delay=30, timeout=None, exponential_backoff=False),
    # writes the stage's outcome to the ledger, then fails when the stage failed (so the run
    # does): a retry would only record the same again
    "record": TaskPolicy(retries=0, retry_delay=10, timeout=120, exponential_backoff=False),
}


def _policies_default() -> dict[TaskKind, TaskPolicy]:
    return {}


# -- what to build and test ------------------------------------------------------------------


class BuildSpec(_Model):
    """BuildImageOperator's settings. ``context`` is relative to the spec file. ``revision``:
    what a run delivers when it is given none (default: the context's git HEAD, else a hash
    of its files); it may be a Jinja template such as ``{{ ds_nodash }}``."""

    context: str = "."
    dockerfile: str = "Dockerfile"
    build_args: dict[str, str] = Field(default_factory=dict)
    target: str | None = None
    source: str | None = None
    extra_tags: list[str] = Field(default_factory=list)
    revision: str | None = None
    docker_conn_id: str | None = None


class TestSpec(_Model):
    """A test run in the image, by digest (TestImageOperator): ``command`` is an argv list, or
    a shell line with ``shell: true``."""

    __test__ = False  # not a pytest class

    name: str
    command: list[str] | str
    shell: bool = False
    environment: dict[str, str] = Field(default_factory=dict)
    junit_path: str | None = None
    timeout: PositiveSeconds = 1800.0

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _name(value)

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | str) -> list[str] | str:
        if not value or (isinstance(value, str) and not value.strip()):
            raise ValueError("must not be empty")
        return value

    def problems(self) -> list[str]:
        if isinstance(self.command, str) and not self.shell:
            return ["command: a string is a shell line: set shell: true, or give an argv list"]
        if isinstance(self.command, list) and self.shell:
            return ["shell: true takes the command as one string"]
        return []


class MigrationsSpec(_Model):
    """MigrateDatabaseOperator's settings: the release image migrates its database, ``expand``
    before each stage's deploy and ``contract`` after it."""

    database_conn_id: str
    command: list[str] | None = None
    status_command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    network: str | None = None
    extra_hosts: dict[str, str] = Field(default_factory=dict)
    timeout: PositiveSeconds = 1800.0

    @field_validator("database_conn_id")
    @classmethod
    def _conn(cls, value: str) -> str:
        if not _CONN_ID.match(value):
            raise ValueError(f"{value!r} is not an Airflow connection id")
        return value


# -- how each environment is delivered -------------------------------------------------------


# The deployment types' settings are the strategies' own models, used as they are: a stage's
# ``deploy`` is one of them, chosen by its ``type``; what it leaves unset comes from the
# environment (PipelineSpec.deploy_settings).
MinInServiceDeploy = MinimumInService
RollingDeploy = Rolling
BlueGreenDeploy = BlueGreen
ABDeploy = ABTest
DeploySpec = Annotated[MinimumInService | Rolling | BlueGreen | ABTest, Field(discriminator="type")]


class HttpCheck(_Model):
    """A GET on the environment's router that must answer ``status`` and contain ``contains``
    (a Jinja template allowed) or, with ``expect_digest``, the digest being delivered;
    ``attempts`` tries, ``interval`` seconds apart."""

    path: UrlPath = "/"
    status: int = Field(default=200, ge=100, le=599)
    contains: str | None = None
    expect_digest: bool = False
    timeout: PositiveSeconds = 5.0
    attempts: int = Field(default=3, ge=1, le=100)
    interval: Seconds = 1.0


class SmokeTest(_Model):
    """A smoke test of a deployed environment: ``http`` (a request to its router) or
    ``command`` (a TestImageOperator run of the image, by digest)."""

    name: str
    http: HttpCheck | None = None
    command: list[str] | str | None = None
    shell: bool = False
    environment: dict[str, str] = Field(default_factory=dict)
    timeout: PositiveSeconds = 600.0

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _name(value)

    def problems(self) -> list[str]:
        if (self.http is None) == (self.command is None):
            return [
                "http: give either http (a request to the router) or command (run in the "
                "image), not both, not neither"
            ]
        if self.command is not None:
            if not self.command or (isinstance(self.command, str) and not self.command.strip()):
                return ["command: must not be empty"]
            if isinstance(self.command, str) and not self.shell:
                return ["command: a string is a shell line: set shell: true, or give an argv list"]
            if isinstance(self.command, list) and self.shell:
                return ["shell: true takes the command as one string"]
        elif self.shell or self.environment:
            return ["shell/environment: only for a command smoke test"]
        return []


class VerifySpec(_Model):
    """After the deploy: ``health`` waits (up to ``timeout`` s) for the router to answer the
    environment's health check; then the ``smoke`` tests run in parallel."""

    health: bool = True
    timeout: PositiveSeconds = 120.0
    smoke: list[SmokeTest] = Field(default_factory=list)


class StageSpec(_Model):
    """One environment's delivery: promote -> apply infra -> migrate (expand) -> deploy ->
    verify -> migrate (contract). ``approval``: in continuous delivery, a human approves
    before this stage starts. ``require_previous``: the promotion is refused unless the
    previous stage's tag points at the same digest. ``migrate`` (default: when the pipeline
    has ``migrations``). ``lock_wait``: seconds a deploy waits for another one to finish.
    ``alternatives``: other deployment types a run may choose instead of ``deploy`` (the DAG
    param ``deploy_<environment>``; ``deploy`` is the default), each with its settings."""

    environment: str
    deploy: DeploySpec
    alternatives: list[DeploySpec] = Field(default_factory=list)
    approval: bool = False
    require_previous: bool = True
    migrate: bool | None = None
    apply_infra: bool | None = None
    verify: VerifySpec = Field(default_factory=VerifySpec)
    lock_wait: Seconds = 0.0

    def choices(self) -> list[DeploySpec]:
        """``deploy`` and its alternatives, in that order."""
        return [self.deploy, *self.alternatives]

    def as_deploy(self, deploy: DeploySpec) -> StageSpec:
        """This stage delivered with ``deploy``: what one path of a choice builds from."""
        return self.model_copy(update={"deploy": deploy, "alternatives": []})

    @property
    def choice_param(self) -> str:
        """The DAG param that picks the deployment type when there are alternatives."""
        return f"deploy_{self.environment.replace('-', '_')}"


class ApprovalSpec(_Model):
    """The approval gates: how long a human has (``timeout`` seconds; None: no limit) and
    who may answer (Airflow user ids; none: anyone who may act on the DAG)."""

    timeout: PositiveSeconds | None = None
    assigned_users: list[str] = Field(default_factory=list)


class AssetTrigger(_Model):
    """Run on promotion events of ``repository`` (default: this spec's image) to
    ``environment``."""

    environment: str
    repository: str | None = None


class TriggerSpec(_Model):
    """When runs start. ``schedule``: a cron expression or a preset (``@daily``); None: manual
    runs only. ``asset``: run on a promotion event of an image (another pipeline promoting
    ``repository`` (default: this spec's image) to ``environment``): the run redeploys the
    digest of the event, skipping build and tests. Manual runs take the params ``revision``
    (commit SHA or ref) or ``image`` (a digest-pinned image already built: redeploy it)."""

    schedule: str | None = None
    asset: AssetTrigger | None = None


class PipelineSettings(_Model):
    """The ``pipeline`` section of a pipeline spec."""

    dag_id: str | None = None
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    mode: Literal["continuous_delivery", "continuous_deployment"] = "continuous_delivery"
    trigger: TriggerSpec = Field(default_factory=TriggerSpec)
    build: BuildSpec = Field(default_factory=BuildSpec)
    tests: list[TestSpec] = Field(default_factory=list)
    migrations: MigrationsSpec | None = None
    stages: list[StageSpec] = Field(min_length=1)
    approval: ApprovalSpec = Field(default_factory=ApprovalSpec)
    tasks: dict[TaskKind, TaskPolicy] = Field(default_factory=_policies_default)
    docker_conn_id: str | None = None
    docker_url: str | None = None
    # where each stage's DeploymentRecord goes (a JSON Lines file on a path every worker
    # shares); None: $AIRFLOW_HOME/docker-delivery/ledger.jsonl of the worker
    ledger: str | None = None
    # names that say secret (DB_PASSWORD, ...) but are not, in build args and the migrations'
    # and tests' environments
    not_secrets: list[str] = Field(default_factory=list)


class PipelineSpec(ServiceSpec):
    """A service spec with its delivery pipeline (see the module docstring)."""

    pipeline: PipelineSettings

    # -- lookups -----------------------------------------------------------------------------

    @property
    def dag_id(self) -> str:
        return self.pipeline.dag_id or "deliver_" + self.service.replace("-", "_")

    @property
    def repository(self) -> str:
        assert self.image is not None  # checked by problems()
        return self.image

    def service_spec(self) -> ServiceSpec:
        """The service spec alone (what ApplyInfraOperator takes)."""
        data = self.model_dump(by_alias=True, exclude={"pipeline"})
        return ServiceSpec.model_validate(data)

    def service_dict(self) -> dict[str, Any]:
        """The service spec as plain JSON-able data."""
        return self.model_dump(mode="json", by_alias=True, exclude={"pipeline"})

    def env(self, stage: StageSpec) -> EnvironmentSpec:
        return self.environments[stage.environment]

    def policy(self, kind: str) -> TaskPolicy:
        """The defaults of ``kind`` with the spec's ``pipeline.tasks`` overrides."""
        base = DEFAULT_POLICIES[kind]
        over = {str(k): v for k, v in self.pipeline.tasks.items()}.get(kind)
        if over is None:
            return base
        return base.model_copy(update=over.model_dump(exclude_none=True))

    def gated(self, stage: StageSpec) -> bool:
        return self.pipeline.mode == "continuous_delivery" and stage.approval

    def migrates(self, stage: StageSpec) -> bool:
        if stage.migrate is None:
            return self.pipeline.migrations is not None
        return stage.migrate

    def applies_infra(self, stage: StageSpec) -> bool:
        """Whether ApplyInfraOperator runs before the deploy. Default: yes for min in-service and
        rolling; no for blue/green and A/B, whose new instances carry the environment's
        configuration themselves (and infra.plan refuses a service serving in two groups)."""
        if stage.apply_infra is not None:
            return stage.apply_infra
        return stage.deploy.type in ("min_in_service", "rolling")

    def deploy_settings(self, stage: StageSpec) -> Any:
        """``stage``'s deployment settings with what they leave unset from its environment:
        what the deploy operators run (DeploySettingsInvalid when they cannot work there)."""
        return stage.deploy.defaulted(**self.env(stage).deploy_defaults())

    def min_in_service(self, stage: StageSpec) -> int:
        settings = self.deploy_settings(stage)
        assert isinstance(settings, MinimumInService)
        return settings.keep

    def rolling_stages(self, stage: StageSpec) -> list[int | str]:
        return list(self.deploy_settings(stage).stages)

    # -- checks across fields ------------------------------------------------------------------

    def problems(self) -> list[str]:
        """What is wrong across the service and pipeline sections, one ``path: message`` each."""
        out: list[str] = []
        p = self.pipeline
        if self.image is None:
            out.append(
                "image: required: the repository the pipeline builds and promotes "
                "(e.g. 127.0.0.1:5000/shop/web)"
            )
        elif ImageRef.parse(self.image).digest is not None:
            out.append("image: a pipeline builds its image: give the repository, without digest")
        if p.dag_id is not None and not _DAG_ID.match(p.dag_id):
            out.append("pipeline.dag_id: use letters, digits, '_', '.' and '-' (1-250)")
        elif not _DAG_ID.match(self.dag_id):
            out.append("service: the DAG id made from it is not valid: set pipeline.dag_id")
        out += self._trigger_problems()
        out += _unique("pipeline.tests", [t.name for t in p.tests])
        for test in p.tests:
            out += [f"pipeline.tests[{test.name}].{m}" for m in test.problems()]
        for kind, policy in p.tasks.items():
            if kind == "deploy" and policy.retries:
                out.append(
                    "pipeline.tasks.deploy.retries: must be 0: a deploy is never retried by "
                    "itself (a failed deploy has rolled back; release it again with Clear)"
                )
        out += self._literal_secrets()
        out += _unique("pipeline.stages", [s.environment for s in p.stages], "environment")
        for i, stage in enumerate(p.stages):
            out += self._stage_problems(i, stage)
        staged = {s.environment for s in p.stages}
        for name in self.environments:
            if name not in staged:
                out.append(
                    f"environments.{name}: no stage delivers it: add it to pipeline.stages, "
                    "or remove it"
                )
        ports: dict[int, str] = {}
        for name, env in self.environments.items():
            for field, port in (
                ("port", env.router.port),
                ("preview_port", env.router.preview_port),
            ):
                if port is None:
                    continue
                if port in ports:
                    out.append(
                        f"environments.{name}.router.{field}: {port} is also {ports[port]}; "
                        "each router needs host ports of its own"
                    )
                ports.setdefault(port, f"{name}'s router {field}")
        gates = [s for s in p.stages if s.approval]
        if p.mode == "continuous_delivery" and not gates:
            out.append(
                "pipeline.mode: continuous_delivery needs approval: true on the stage(s) a "
                "human gates; with no gate, set mode: continuous_deployment"
            )
        if p.mode == "continuous_deployment":
            out += [
                f"pipeline.stages[{s.environment}].approval: continuous_deployment has no "
                "approval gates; set mode: continuous_delivery to gate this stage"
                for s in gates
            ]
        return out

    def _literal_secrets(self) -> list[str]:
        """A secret written into the spec reaches the image's history (build args) or a
        container's configuration (the migrations' and tests' environments), where anyone
        who may inspect it reads it: refused unless its name is in ``pipeline.not_secrets``. In
        an environment a template (``{{ conn.db.password }}``) is rendered when the task runs
        and masked in its log; a build arg is refused even then."""
        p = self.pipeline
        places: list[tuple[str, Mapping[str, str], bool]] = [
            ("pipeline.build.build_args", p.build.build_args, False),
            *[(f"pipeline.tests[{t.name}].environment", t.environment, True) for t in p.tests],
            *[
                (
                    f"pipeline.stages[{s.environment}].verify.smoke[{m.name}].environment",
                    m.environment,
                    True,
                )
                for s in p.stages
                for m in s.verify.smoke
            ],
        ]
        if p.migrations is not None:
            places.append(("pipeline.migrations.env", p.migrations.env, True))
        out = []
        for at, values, templates in places:
            for name, value in values.items():
                if not value or not looks_secret(name) or name in p.not_secrets:
                    continue
                if templates and "{{" in value:
                    continue
                where = (
                    "a build arg stays in the image's history (docker history): never pass a "
                    "secret as one"
                    if not templates
                    else "it would stay in the container's configuration: render it from an "
                    "Airflow connection or variable when the task runs ('{{ conn.<id>.password "
                    "}}')"
                )
                out.append(
                    f"{join_path(at, name)}: the name says secret and it holds a literal value; "
                    f"{where}, or list the name in pipeline.not_secrets if it is not a secret"
                )
        return out

    def _trigger_problems(self) -> list[str]:
        trigger = self.pipeline.trigger
        out: list[str] = []
        if trigger.schedule is not None and trigger.asset is not None:
            out.append("pipeline.trigger: give schedule or asset, not both")
        if trigger.schedule is not None and not _valid_schedule(trigger.schedule):
            out.append(
                "pipeline.trigger.schedule: not a cron expression ('0 6 * * 1-5') nor a preset "
                f"({', '.join(sorted(PRESETS))})"
            )
        if trigger.asset is not None and trigger.asset.repository is not None:
            try:
                ref = ImageRef.parse(trigger.asset.repository)
            except DeliveryError as exc:
                out.append(f"pipeline.trigger.asset.repository: {exc}")
            else:
                if ref.tag is not None or ref.digest is not None:
                    out.append("pipeline.trigger.asset.repository: a repository, without tag")
        return out

    def _stage_problems(self, index: int, stage: StageSpec) -> list[str]:
        at = f"pipeline.stages[{stage.environment}]"
        out: list[str] = []
        env = self.environments.get(stage.environment)
        if env is None:
            known = ", ".join(self.environments)
            return [f"{at}.environment: no such environment (the spec has {known})"]
        where = f"environments.{stage.environment}"
        if env.replicas < 1:
            out.append(f"{where}.replicas: must be >= 1 for a deploy")
        out += self._deploy_problems(f"{at}.deploy", stage)
        types = [d.type for d in stage.choices()]
        for i, alternative in enumerate(stage.alternatives):
            if types.index(alternative.type) <= i:
                out.append(
                    f"{at}.alternatives[{i}].type: {alternative.type} is given twice (each "
                    "deployment type once, deploy's included)"
                )
            out += self._deploy_problems(f"{at}.alternatives[{i}]", stage.as_deploy(alternative))
        if stage.migrate and self.pipeline.migrations is None:
            out.append(f"{at}.migrate: the pipeline has no migrations section")
        out += _unique(f"{at}.verify.smoke", [s.name for s in stage.verify.smoke])
        for smoke in stage.verify.smoke:
            out += [f"{at}.verify.smoke[{smoke.name}].{m}" for m in smoke.problems()]
        return out

    def _deploy_problems(self, at: str, stage: StageSpec) -> list[str]:
        """What is wrong with ``stage.deploy`` in its environment; ``at`` is its field path."""
        out: list[str] = []
        env = self.environments[stage.environment]
        where = f"environments.{stage.environment}"
        kind = stage.deploy.type
        if env.target not in DEPLOY_TARGETS[kind]:
            out.append(
                f"{at}.type: {kind} runs on target {' or '.join(DEPLOY_TARGETS[kind])}, and "
                f"{where}.target is {env.target}"
            )
        if env.replicas >= 1:
            try:
                self.deploy_settings(stage)
            except DeliveryError as exc:
                field, sep, rest = str(exc).partition(": ")
                named = sep and field.isidentifier()
                out.append(f"{at}.{field}: {rest}" if named else f"{at}: {exc}")
            else:
                out += self._slot_problems(at, stage)
        if isinstance(stage.deploy, BlueGreen) and env.router.preview_port is None:
            out.append(
                f"{where}.router.preview_port: required by blue_green (the new colour is "
                "checked there before the switch)"
            )
        return out

    def slots_needed(self, stage: StageSpec) -> tuple[int, str]:
        """Router slots ``stage``'s deployment (and its infrastructure change) takes at its
        peak, and why."""
        from docker_delivery.strategies.rolling import Rolling

        env, deploy = self.env(stage), stage.deploy
        needs = [(env.replicas, "one instance per slot")]
        if isinstance(deploy, RollingDeploy):
            stages = self.rolling_stages(stage)
            needs.append(
                (
                    Rolling(replicas=env.replicas, stages=tuple(stages)).slots_needed(),
                    f"new tasks enter before old ones leave, stages {stages}",
                )
            )
        if isinstance(deploy, ABDeploy):
            needs.append((2 * env.replicas, "A and B side by side in the ab backend"))
        if self.applies_infra(stage) and env.target == "swarm":
            stages = list(env.rollout.stages)
            needs.append(
                (
                    Rolling(replicas=env.replicas, stages=tuple(stages)).slots_needed(),
                    f"an infrastructure change rolls in rollout.stages {stages}",
                )
            )
        return max(needs, key=lambda need: need[0])

    def _slot_problems(self, at: str, stage: StageSpec) -> list[str]:
        env = self.env(stage)
        if env.replicas < 1:
            return []
        try:
            needed, why = self.slots_needed(stage)
        except DeliveryError:
            return []  # bad stages: reported on their own
        if needed <= env.router.slots or needed == env.replicas:
            return []  # enough, or reported for the environment already
        return [
            f"{at}.type: {stage.deploy.type} of {env.replicas} replicas needs {needed} router "
            f"slots ({why}); environments.{stage.environment}.router.slots is "
            f"{env.router.slots}: raise it to {needed}, or lower replicas"
        ]


def _unique(at: str, names: Sequence[str], what: str = "name") -> list[str]:
    seen: set[str] = set()
    out = []
    for name in names:
        if name in seen:
            out.append(f"{at}[{name}]: the {what} {name!r} is given twice")
        seen.add(name)
    return out


def _valid_schedule(schedule: str) -> bool:
    if schedule in PRESETS:
        return True
    from croniter import croniter

    return bool(croniter.is_valid(schedule))


# -- loading ---------------------------------------------------------------------------------


def _substitute(value: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    """``${NAME}`` / ``${NAME:-default}`` in every string of ``value``, from ``env``."""
    if isinstance(value, str):

        def one(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{path or 'spec'}: ${{{name}}} is not set (give ${{{name}:-default}})")
            return ""

        return _ENV_REF.sub(one, value) if "$" in value else value
    if isinstance(value, Mapping):
        return {k: _substitute(v, join_path(path, k), env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [
            _substitute(v, f"{path}[{item_name(v) or i}]", env, problems)
            for i, v in enumerate(value)
        ]
    return value


def _resolve_context(data: dict[str, Any], base: Path) -> None:
    """``pipeline.build.context`` made absolute against the spec file's directory."""
    pipeline = data.get("pipeline")
    build = pipeline.get("build") if isinstance(pipeline, Mapping) else None
    if isinstance(build, dict):
        context = build.get("context", ".")
        if isinstance(context, str) and "{{" not in context:
            build["context"] = str((base / context).resolve())


def _context_problems(spec: PipelineSpec) -> list[str]:
    build = spec.pipeline.build
    if "{{" in build.context:
        return []
    context = Path(build.context)
    if not context.is_dir():
        return [f"pipeline.build.context: {context} is not a directory"]
    if "{{" not in build.dockerfile and not (context / build.dockerfile).is_file():
        return [f"pipeline.build.dockerfile: {build.dockerfile} is not in {context}"]
    return []


def load_pipeline(
    source: str | Path | Mapping[str, Any] | PipelineSpec,
    *,
    environ: Mapping[str, str] | None = None,
) -> PipelineSpec:
    """A validated :class:`PipelineSpec` from a YAML file (a Path, or a string ending in .yaml
    or .yml), YAML text, or a mapping. Raises :class:`SpecInvalid` listing every problem with
    its field path. ``environ`` (default: ``os.environ``) fills ``${NAME}`` references."""
    if isinstance(source, PipelineSpec):
        found = source.problems() + _context_problems(source)
        if found:
            raise SpecInvalid(f"pipeline {source.dag_id}", found)
        return source
    base = Path.cwd()
    if isinstance(source, Mapping):
        data: Any = source
        origin = "pipeline spec"
    else:
        text, origin, where = read_source(source)
        base = where or base
        data = load_yaml(text, origin)
    if not isinstance(data, Mapping):
        raise SpecInvalid(
            origin, ["the spec must be a mapping: service, image, environments, pipeline"]
        )
    problems: list[str] = []
    data = _substitute(data, "", os.environ if environ is None else environ, problems)
    if problems:
        raise SpecInvalid(origin, problems)
    _resolve_context(data, base)
    known = [*ServiceSpec.model_fields, "pipeline"]
    for key in data:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            problems.append(
                f"{join_path('', key)}: unknown key"
                + (f" (did you mean {hint[0]!r}?)" if hint else f"; known: {', '.join(known)}")
            )
    service_part = {k: v for k, v in data.items() if k in ServiceSpec.model_fields}
    try:
        load_spec(service_part)
    except SpecInvalid as exc:
        problems += exc.problems
    if "pipeline" not in data:
        problems.append("pipeline: required: the build, tests and stages of the delivery")
    else:
        try:
            with validating_a_spec():
                PipelineSettings.model_validate(data["pipeline"])
        except ValidationError as exc:
            problems += describe_errors(exc, data["pipeline"], PipelineSettings, "pipeline")
    if problems:
        raise SpecInvalid(origin, problems)
    with validating_a_spec():
        spec = PipelineSpec.model_validate(data)
    problems = spec.problems() + _context_problems(spec)
    if problems:
        raise SpecInvalid(origin, problems)
    return spec
