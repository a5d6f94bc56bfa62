"""The ``pipeline`` section's parts: tasks' policies, build, tests, migrations, stages, trigger."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from docker_delivery.spec.service import ConnId, UrlPath
from docker_delivery.strategies.settings import ABTest, BlueGreen, MinimumInService, Rolling

DeployType = Literal["min_in_service", "rolling", "blue_green", "ab"]
DEPLOY_TARGETS: dict[str, tuple[str, ...]] = {
    "min_in_service": ("engine", "ecs"),
    "rolling": ("swarm", "ecs"),
    "blue_green": ("engine", "swarm", "ecs"),
    "ab": ("engine", "swarm", "ecs"),
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


_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,39}$")
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")


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
    # the docker_engine connection of the engine that builds the image and runs its tests (a
    # stage's smoke commands run on that environment's engine); None: docker_url, else local
    engine: ConnId | None = None
    # where each stage's DeploymentRecord goes: an Airflow connection to the ledger's database
    # (postgres, mysql, sqlite), or a SQLAlchemy URL or SQLite file; None: what Airflow's
    # [docker_delivery] ledger_conn_id / ledger say, else $AIRFLOW_HOME/docker-delivery/ledger.db
    ledger_conn_id: ConnId | None = None
    ledger: str | None = None
    # names that say secret (DB_PASSWORD, ...) but are not, in build args and the migrations'
    # and tests' environments
    not_secrets: list[str] = Field(default_factory=list)

    @field_validator("docker_conn_id", "docker_url", "engine", mode="before")
    @classmethod
    def _unset(cls, value: object) -> object:
        """Empty (as ``${NAME:-}`` gives when NAME is unset) is the default: no connection."""
        return None if value == "" else value
