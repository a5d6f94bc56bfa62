"""The pipeline spec as a whole: a service spec and its pipeline; lookups, checks across fields."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from docker_delivery.errors import DeliveryError
from docker_delivery.images.ref import ImageRef
from docker_delivery.spec import EnvironmentSpec, ServiceSpec, looks_secret
from docker_delivery.spec.messages import join_path
from docker_delivery.strategies.settings import BlueGreen, DeploySettings, MinimumInService, Rolling
from docker_delivery.templates.pipeline_spec.sections import (
    DEFAULT_POLICIES,
    DEPLOY_TARGETS,
    ABDeploy,
    PipelineSettings,
    RollingDeploy,
    StageSpec,
    TaskPolicy,
)

PRESETS = frozenset({"@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"})
_DAG_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")


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
        if self.env(stage).target == "ecs":
            return False  # on ECS the environment's configuration is in each task definition
        return stage.deploy.type in ("min_in_service", "rolling")

    def deploy_settings(self, stage: StageSpec) -> DeploySettings:
        """``stage``'s deployment settings with what they leave unset from its environment:
        what the deploy operators run (DeploySettingsInvalid when they cannot work there)."""
        return stage.deploy.defaulted(**self.env(stage).deploy_defaults())

    def min_in_service(self, stage: StageSpec) -> int:
        settings = self.deploy_settings(stage)
        assert isinstance(settings, MinimumInService)
        return settings.keep

    def rolling_stages(self, stage: StageSpec) -> list[int | str]:
        settings = self.deploy_settings(stage)
        assert isinstance(settings, Rolling), "rolling stages of a rolling deployment"
        return list(settings.stages)

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
            if env.target == "ecs":
                continue  # no HAProxy: its load balancer or DNS name
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
        held = [d.type for d in stage.choices() if held_at(d)]
        if held and stage.alternatives:
            out.append(
                f"{at}.deploy: a rollout held for a decision ({held[0]}: hold_after / "
                "hold_before_switch) takes no alternatives: give the stage one deployment type"
            )
        if held and env.target == "ecs":
            out.append(
                f"{at}.deploy: {held[0]} on ECS runs whole in its deploy task: it cannot be "
                "held for a decision (hold_after / hold_before_switch are for engine and swarm)"
            )
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
        if env.target == "ecs":
            return out + self._ecs_problems(at, stage)
        if isinstance(stage.deploy, BlueGreen) and env.router.preview_port is None:
            out.append(
                f"{where}.router.preview_port: required by blue_green (the new colour is "
                "checked there before the switch)"
            )
        return out

    def _ecs_problems(self, at: str, stage: StageSpec) -> list[str]:
        """What an ECS environment cannot do for ``stage``."""
        env, where = self.environments[stage.environment], f"environments.{stage.environment}"
        out = []
        aws = env.aws
        if aws is not None and aws.router is None and stage.deploy.type in ("blue_green", "ab"):
            out.append(
                f"{where}.aws.router: {stage.deploy.type} on ECS moves traffic by an ALB "
                "listener's weights (type: alb) or Route 53 weighted records (type: route53)"
            )
        kinds = {d.type for d in self.stages_of(stage.environment)}
        if stage.deploy.type == "rolling" and "min_in_service" in kinds:
            out.append(
                f"{at}.type: on ECS minimum in-service updates a service in place (the ECS "
                "deployment controller) and rolling moves its task sets (EXTERNAL): one "
                f"environment takes one of them, and {stage.environment} is given both"
            )
        if self.applies_infra(stage):
            out.append(
                f"{at}.apply_infra: on ECS the environment's variables, secrets and limits are "
                "part of each release's task definition: there is no separate change to apply"
            )
        if self.migrates(stage):
            out.append(
                f"{at}.migrate: migrations run as a one-off container on a Docker engine; on ECS "
                "run them from a stage on an engine, or as their own task"
            )
        if any(s.http is None for s in stage.verify.smoke):
            out.append(
                f"{at}.verify.smoke: on ECS smoke tests are HTTP checks (a command needs an engine)"
            )
        if stage.verify.smoke and (aws is None or aws.public_url is None):
            out.append(f"{where}.aws.public_url: the smoke tests reach the service there")
        return out

    def stages_of(self, environment: str) -> list[Any]:
        """Every deployment (with alternatives) the pipeline's stages give ``environment``."""
        return [
            d for s in self.pipeline.stages if s.environment == environment for d in s.choices()
        ]

    def slots_needed(self, stage: StageSpec) -> tuple[int, str]:
        """Router slots ``stage``'s deployment (and its infrastructure change) takes at its
        peak, and why."""
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


def held_at(deploy: DeploySettings) -> list[int]:
    """Where a pipeline holds ``deploy`` for a human's decision: the rolling stages or A/B steps
    after which it waits; ``[0]`` for blue/green's hold before the switch; [] when it never
    waits."""
    if isinstance(deploy, (Rolling, ABDeploy)):
        return list(deploy.hold_after)
    if isinstance(deploy, BlueGreen) and deploy.hold_before_switch:
        return [0]
    return []


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
