"""Deployment operators: thin adapters over docker_delivery.strategies.

Every operator deploys a digest-pinned image (usually the build task's XCom) to one service in
one environment, health-gated, behind the service's HAProxy router (started on first use, or an
existing HAProxy given by a ``haproxy`` connection). Settings are validated when the DAG is
parsed; the image and environment variables when the task runs, before anything changes. A
retry (or a cleared task) looks at the running containers and the router and carries on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, cast

from airflow.sdk import BaseOperator, Context, conf

from docker_delivery.errors import TargetError
from docker_delivery.health import HealthCheck
from docker_delivery.hooks.engine import engine_client, engine_host, engine_url
from docker_delivery.operators.common import (
    SHORTEST_DEFERRAL,
    lock_owner,
    says_when_nothing_changed,
    tag_what_serves,
)
from docker_delivery.operators.links import DeliveryLink, ImageLink, ServiceLink
from docker_delivery.routing.service import RouterSettings
from docker_delivery.strategies.aws_bake import BakeHandedOver
from docker_delivery.strategies.settings import (
    ABTest,
    BlueGreen,
    DeploySettings,
    MinimumInService,
    Rolling,
)
from docker_delivery.targets.engine_errors import engine_calls

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

    from docker_delivery.routing.haproxy import HaproxyRouter
    from docker_delivery.spec import ServiceSpec
    from docker_delivery.strategies.aws import EcsContext
    from docker_delivery.targets.base import Release, TargetKind

_S = TypeVar("_S", bound=DeploySettings)


class Outcome(Protocol):
    """What a step returns: a deployment's, switch's, retire's or rollback's result."""

    def as_dict(self) -> dict[str, Any]: ...


class _DeployOperator(BaseOperator):
    """What every deployment operator shares. Its deployment type's settings (``settings_model``)
    are given as ``settings=`` (the model, or its fields as a mapping) or as keyword arguments of
    their own names, and validated when the DAG is parsed; what they leave unset comes from the
    environment spec (``spec``) when the task runs, which also gives the release, the router and
    the health check (the same as ApplyInfraOperator applies)."""

    template_fields: Sequence[str] = ("image", "service", "environment", "env", "router_port")
    operator_extra_links = (ServiceLink(), ImageLink(), DeliveryLink())
    ui_color = "#fde68a"
    settings_model: ClassVar[type[DeploySettings] | None] = None

    def __init__(
        self,
        *,
        service: str,
        environment: str,
        image: str,
        settings: DeploySettings | Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        app_port: int = 8080,
        health_check: HealthCheck | Mapping[str, Any] | None = None,
        router_port: int | str | None = None,
        router_image: str = "haproxy:lts",
        router_slots: int = 16,
        haproxy_conn_id: str | None = None,
        stop_grace: float = 30.0,
        lock_wait: float = 0.0,
        plan_only: bool = False,
        docker_url: str | None = None,
        engine_conn_id: str | None = None,
        spec: Any = None,
        aws_conn_id: str = "aws_default",
        target: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        model = type(self).settings_model
        fields = {
            k: kwargs.pop(k)
            for k in list(kwargs)
            if model is not None and k in model.model_fields and k != "type"
        }
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self._ecs_baked: dict[str, Any] = {}  # resumed: the reports of the bakes run elsewhere
        # The deployment type's settings, validated now (at parse time).
        self.settings = model.of(settings, **fields) if model is not None else None
        if target not in (None, "engine", "swarm"):
            raise ValueError(f"target must be 'engine' or 'swarm', got {target!r}")
        self.target = target
        if spec is not None and not isinstance(spec, (str, dict)):
            spec = spec.model_dump(by_alias=True, exclude_unset=True)  # plain data for Airflow
        self.spec = spec
        self.aws_conn_id = aws_conn_id
        self.service = service
        self.environment = environment
        self.image = image
        self.env = dict(env or {})
        self.app_port = app_port
        if isinstance(health_check, Mapping):
            health_check = HealthCheck(**health_check)
        self.health_check = health_check
        if router_port is None and haproxy_conn_id is None and spec is None:
            raise ValueError("give router_port (a router is started), haproxy_conn_id or spec")
        self.router_port = router_port
        self.router_image = router_image
        self.router_slots = router_slots
        if isinstance(router_port, int):  # validates now, at parse time
            RouterSettings(port=router_port, image=router_image, slots=router_slots)
        self.haproxy_conn_id = haproxy_conn_id
        self.stop_grace = stop_grace
        self.lock_wait = lock_wait
        self.plan_only = plan_only
        self.docker_url = docker_url
        self.engine_conn_id = engine_conn_id

    # -- what the task runs with, from the environment spec when there is one (read once) --------

    def environment_spec(self) -> ServiceSpec | None:
        if self.spec is None:
            return None
        from docker_delivery.spec import load_spec

        return load_spec(self.spec)

    def router_settings(self, spec: ServiceSpec | None) -> RouterSettings | None:
        """The service's router: as the environment spec says when given (every operator of
        a service, and ApplyInfraOperator, then render the same configuration, so none finds
        the router running "another configuration"), else from ``router_port``; None for an
        existing HAProxy (``haproxy_conn_id``)."""
        if spec is not None and self.haproxy_conn_id is None:
            return spec.router_for(self.environment)
        if self.router_port is None:
            return None
        return RouterSettings(
            port=int(self.router_port), image=self.router_image, slots=self.router_slots
        )

    def target_kind(self, spec: ServiceSpec | None) -> TargetKind:
        """Where the service runs: ``target`` when given, else the environment spec's, else
        ``engine`` (blue/green, A/B: a container per instance, or a Swarm service per colour)."""
        if self.target is not None:
            return cast("TargetKind", self.target)
        if spec is not None:
            target = spec.environment(self.environment).target
            assert target != "ecs", "an ECS environment runs through execute_on_ecs"
            return target
        return "engine"

    def check(self, spec: ServiceSpec | None) -> HealthCheck:
        if self.health_check is not None:
            return self.health_check
        if spec is not None:
            return spec.health_check_for(self.environment)
        return HealthCheck(port=self.app_port)

    def deploy_settings(self, spec: ServiceSpec | None) -> DeploySettings:
        """The settings, with what they leave unset from the environment spec (or the
        operator's ``stop_grace``)."""
        assert self.settings is not None
        if spec is not None:
            return self.settings.defaulted(**spec.environment(self.environment).deploy_defaults())
        return self.settings.defaulted(stop_grace=self.stop_grace)

    def settings_of(self, spec: ServiceSpec | None, kind: type[_S]) -> _S:
        """:meth:`deploy_settings`, known to be of this operator's deployment type."""
        settings = self.deploy_settings(spec)
        assert isinstance(settings, kind), f"{type(self).__name__} takes {kind.__name__} settings"
        return settings

    def hold(self, stage: int) -> None:
        """Between stages; rolling deployments may wait for a continue here."""

    def release(self, spec: ServiceSpec | None) -> Release:
        """The release to run: from the environment spec when given (variables, secrets, limits,
        networks: the same as ApplyInfraOperator applies), else from ``env``."""
        if spec is not None:
            from docker_delivery.hooks.secrets import read_secret

            return spec.release_for(
                self.environment,
                self.image,
                resolve_secret=lambda ref: read_secret(ref, aws_conn_id=self.aws_conn_id),
            )
        from docker_delivery.targets.base import Release

        return Release.of(
            self.service,
            self.environment,
            self.image,
            port=self.app_port,
            env=self.env,
            stop_grace=self.stop_grace,
        )

    def router(self, spec: ServiceSpec | None) -> RouterSettings | HaproxyRouter:
        from docker_delivery.hooks.haproxy import HaproxyHook

        settings = self.router_settings(spec)
        return settings or HaproxyHook(self.haproxy_conn_id or "haproxy_default").get_router()

    def wiring(self, spec: ServiceSpec | None, context: Context) -> dict[str, Any]:
        """What every step's call takes: the router, the health check, the target, who holds
        the lock and how long to wait for it, and the log."""
        return {
            "router": self.router(spec),
            "check": self.check(spec),
            "target": self.target_kind(spec),
            "owner": lock_owner(context),
            "lock_wait": self.lock_wait,
            "log": self.log.info,
        }

    def deliver(self, client: Any, spec: ServiceSpec | None, context: Context) -> Outcome:
        from docker_delivery.strategies.deploy import deploy

        settings = self.deploy_settings(spec)
        assert isinstance(settings, (MinimumInService, Rolling))
        return deploy(
            client,
            self.release(spec),
            settings,
            router=self.router(spec),
            check=self.check(spec),
            owner=lock_owner(context),
            lock_wait=self.lock_wait,
            dry_run=self.plan_only,
            hold=self.hold,
            keep_lock=self.keeps_lock(),
            log=self.log.info,
        )

    def keeps_lock(self) -> bool:
        """Whether the deployment lock stays this task's when the step returns (it goes on
        after a pause in the triggerer)."""
        return False

    def engine(self, spec: ServiceSpec | None) -> str | None:
        """The engine's connection id: ``engine_conn_id``, else the environment spec's."""
        if self.engine_conn_id or spec is None:
            return self.engine_conn_id
        return spec.environment(self.environment).engine

    def on_ecs(self, ctx: EcsContext, spec: ServiceSpec) -> Outcome:
        """This step on Amazon ECS (the environment's target): its deployment type's runner."""
        from docker_delivery.strategies.aws import run_on_ecs

        return run_on_ecs(ctx, self.deploy_settings(spec))

    def execute_on_ecs(self, spec: ServiceSpec, context: Context) -> dict[str, Any]:
        from docker_delivery.hooks.aws import aws_client
        from docker_delivery.strategies.aws import context_for

        aws = spec.environment(self.environment).aws
        assert aws is not None
        ctx = context_for(
            spec,
            self.environment,
            self.image,
            lambda name: aws_client(name, aws.conn_id, aws.region),
            log=self.log.info,
            owner=lock_owner(context),
            lock_wait=self.lock_wait,
        )
        ctx.hand_over_after = SHORTEST_DEFERRAL if self.deferrable and not self.plan_only else None
        ctx.baked = dict(self._ecs_baked)
        try:
            with says_when_nothing_changed(context):
                out: dict[str, Any] = self.on_ecs(ctx, spec).as_dict()
        except BakeHandedOver as handed:
            from docker_delivery.triggers.ecs_bake import EcsAlarmBakeTrigger

            self.log.info("%s: in the triggerer", handed)
            self.defer(
                trigger=EcsAlarmBakeTrigger(
                    handed.bake, aws_conn_id=aws.conn_id, region=aws.region
                ),
                method_name="execute_ecs_baked",
                kwargs={"baked": ctx.baked},
            )
        if aws.public_url:
            out["url"] = aws.public_url
        return out

    def execute_ecs_baked(
        self, context: Context, event: Any = None, *, baked: dict[str, Any]
    ) -> dict[str, Any]:
        """Resumed after a bake on ECS ran in the triggerer: the step again, from where it
        stands, with the reports of its bakes so far (``baked``) and this one (``event``)."""
        self._ecs_baked = {**baked, str(event["key"]): event}
        return self.execute(context)

    def execute(self, context: Context) -> dict[str, Any]:
        spec = self.environment_spec()
        if spec is not None and spec.environment(self.environment).target == "ecs":
            return self.execute_on_ecs(spec, context)
        engine = self.engine(spec)
        with (
            closing(engine_client(self.docker_url, engine_conn_id=engine)) as client,
            says_when_nothing_changed(context),
            engine_calls(f"deploying {self.service} to {self.environment}"),
        ):
            out: dict[str, Any] = self.deliver(client, spec, context).as_dict()
        settings = self.router_settings(spec)
        if settings is not None:
            host = engine_host(engine_url(self.docker_url, engine_conn_id=engine))
            out["url"] = settings.url(host)
            if (preview := settings.preview(host)) is not None:
                out["preview_url"] = preview
            self.log.info("%s/%s answers at %s", self.service, self.environment, out["url"])
        return out


class _HandsOver(_DeployOperator):
    """A deployment step whose runner may hand a watch over to the triggerer (``deferrable``,
    default: ``[operators] default_deferrable``, for one of 30 s or more): the runner returns
    its result with what to watch under ``handed_key``; the task defers to :meth:`trigger_for`
    and, resumed with the trigger's report (``self._report``), runs the step again from it. The
    steps of every try are told at the end, with the time since the first began."""

    handed_key: ClassVar[str] = ""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._report: dict[str, Any] | None = None  # resumed: the trigger's event

    def hands_over(self, seconds: float) -> bool:
        return self.deferrable and not self.plan_only and seconds >= SHORTEST_DEFERRAL

    def trigger_for(self, handed: dict[str, Any], spec: ServiceSpec | None) -> BaseTrigger:
        raise NotImplementedError

    def router_access(self, spec: ServiceSpec | None) -> dict[str, Any]:
        """How a trigger reaches the router this step drove: through the engine (the service's
        router container) or the ``haproxy`` connection."""
        local = self.router_settings(spec) is not None
        return {
            "docker_url": self.docker_url,
            "engine_conn_id": self.engine(spec),
            "haproxy_conn_id": None if local else self.haproxy_conn_id or "haproxy_default",
        }

    def execute(self, context: Context) -> dict[str, Any]:
        return self.execute_resumed(context, None, so_far={"started": time.time()})

    def execute_resumed(
        self, context: Context, event: Any = None, *, so_far: dict[str, Any]
    ) -> dict[str, Any]:
        """Carry on from the watch that ended (``event``) and defer for the next one, if any;
        ``so_far``: what the tries before did (steps, figures), and since when."""
        self._report = event
        out = super().execute(context)
        out["steps"] = [*so_far.get("steps", []), *out.get("steps", [])]
        if isinstance(out.get("figures"), list):
            out["figures"] = [*so_far.get("figures", []), *out["figures"]]
        out["duration_s"] = round(time.time() - so_far["started"], 3)
        handed = out.pop(self.handed_key, None)
        if handed is None:
            return out
        spec = self.environment_spec()
        done = {"steps": out["steps"], "figures": out.get("figures")}
        self.defer(
            trigger=self.trigger_for(handed, spec),
            method_name="execute_resumed",
            kwargs={"so_far": {**so_far, **done}},
        )
        return out  # not reached: defer() raises TaskDeferred


class MinimumInServiceDeployOperator(_DeployOperator):
    """Replace ``replicas`` containers on one engine in batches, keeping ``min_in_service``
    (:class:`~docker_delivery.strategies.settings.MinimumInService`).

    ``drain_timeout``: seconds an instance may take to finish its requests in flight; past it
    the batch goes back to the old release and the task fails (nothing is cut)."""

    settings_model = MinimumInService


class RollingDeployOperator(_DeployOperator):
    """Staged rolling deployment on Docker Swarm (:class:`~docker_delivery.strategies.settings.
    Rolling`).

    ``pause``: seconds between stages; with ``deferrable`` (default: ``[operators]
    default_deferrable``) a pause of 30 s or more runs in the triggerer, holding no worker
    slot: the task rolls one stage, defers for the pause, and resumes with the next (the
    runner carries on from where the services stand; the deployment lock stays the task's).
    ``continue_variable``: between stages, wait until that Airflow Variable holds a number >=
    the next stage (a human or another task sets it; in a pipeline, ``hold_after`` holds the
    rollout as a human decision, without a worker slot).
    ``until_stage``: stop after that stage; a later run of this operator carries on.
    ``drain_timeout``: seconds an old task may take to finish its requests in flight; past it
    the rollout stops where it stands and the task fails; a retry waits for that task again.
    """

    settings_model = Rolling

    def __init__(self, *, continue_variable: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.continue_variable = continue_variable
        self._stage: int | None = None  # deferring: the stage this try rolls up to

    def deploy_settings(self, spec: ServiceSpec | None) -> DeploySettings:
        settings = super().deploy_settings(spec)
        if self._stage is None:
            return settings
        return settings.model_copy(update={"until_stage": self._stage, "pause": 0.0})

    def execute(self, context: Context) -> dict[str, Any]:
        return self.execute_stage(context, None, stage=1)

    def execute_stage(self, context: Context, event: Any = None, *, stage: int) -> dict[str, Any]:
        """Roll up to ``stage`` and defer for the pause before the next, while one is left;
        the whole rollout when nothing is deferred."""
        from datetime import timedelta

        spec = self.environment_spec()
        self._stage = None
        whole = self.settings_of(spec, Rolling)
        last = whole.until_stage or len(whole.counts)
        ecs = spec is not None and spec.environment(self.environment).target == "ecs"
        short = whole.pause < SHORTEST_DEFERRAL  # slept between stages by the runner
        if not self.deferrable or short or self.plan_only or ecs or stage >= last:
            return super().execute(context)
        self._stage = stage
        out = super().execute(context)
        self.hold(stage)
        self.log.info("pausing %gs before stage %d, in the triggerer", whole.pause, stage + 1)
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        self.defer(
            trigger=TimeDeltaTrigger(timedelta(seconds=whole.pause)),
            method_name="execute_stage",
            kwargs={"stage": stage + 1},
        )
        return out  # not reached: defer() raises TaskDeferred

    def keeps_lock(self) -> bool:
        return self._stage is not None  # rolled up to a stage; the next comes after the pause

    def hold(self, stage: int) -> None:
        if self.continue_variable is None:
            return
        from airflow.sdk import Variable

        self.log.info(
            "holding after stage %d: set Variable %s to %d to continue",
            stage,
            self.continue_variable,
            stage + 1,
        )
        while int(Variable.get(self.continue_variable, default="0") or 0) < stage + 1:
            time.sleep(5)


class BlueGreenDeployOperator(_DeployOperator):
    """Deploy the idle colour at full capacity (or ``preview_replicas`` first), health-gated,
    reachable on the router's preview frontend (``preview_port``) for a validation window
    (:class:`~docker_delivery.strategies.settings.BlueGreen`). SwitchTrafficOperator then moves
    all traffic at once; RetireOperator removes the old colour.
    """

    settings_model = BlueGreen

    def __init__(self, *, preview_port: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.preview_port = preview_port

    def router_settings(self, spec: ServiceSpec | None) -> RouterSettings | None:
        settings = super().router_settings(spec)
        if settings is None or self.preview_port is None or settings.preview_port is not None:
            return settings
        return RouterSettings(
            port=settings.port,
            preview_port=int(self.preview_port),
            image=settings.image,
            slots=settings.slots,
        )

    def deliver(self, client: Any, spec: ServiceSpec | None, context: Context) -> Outcome:
        from docker_delivery.strategies.bluegreen import deploy_idle

        return deploy_idle(
            client,
            self.release(spec),
            self.settings_of(spec, BlueGreen),
            dry_run=self.plan_only,
            **self.wiring(spec, context),
        )


class SwitchTrafficOperator(_HandsOver, BlueGreenDeployOperator):
    """Move all traffic to the colour running ``image`` at once (atomic at the router), after
    bringing it to full capacity; a failed post-switch check switches back by itself.

    ``deferrable`` (default: ``[operators] default_deferrable``): a ``post_switch_check`` of
    30 s or more runs in the triggerer (:class:`~docker_delivery.triggers.post_switch.
    PostSwitchCheckTrigger`), holding no worker slot; on a failure it sends every client back
    to the old colour at once, and the task, resumed, records the switch back and fails."""

    handed_key = "watch"

    def on_ecs(self, ctx: EcsContext, spec: ServiceSpec) -> Outcome:
        raise TargetError("on ECS the blue/green deploy step checks, switches and retires")

    def deliver(self, client: Any, spec: ServiceSpec | None, context: Context) -> Outcome:
        from docker_delivery.strategies.bluegreen import switch_traffic
        from docker_delivery.strategies.post_switch import WatchReport

        settings = self.settings_of(spec, BlueGreen)
        return switch_traffic(
            client,
            self.release(spec),
            settings,
            watch_elsewhere=self.hands_over(settings.post_switch_check),
            watched=None if self._report is None else WatchReport.from_dict(self._report),
            **self.wiring(spec, context),
        )

    def trigger_for(self, handed: dict[str, Any], spec: ServiceSpec | None) -> BaseTrigger:
        from docker_delivery.triggers.post_switch import PostSwitchCheckTrigger

        return PostSwitchCheckTrigger(
            self.service,
            self.environment,
            self.settings_of(spec, BlueGreen),
            self.check(spec),
            handed,
            target=self.target_kind(spec),
            **self.router_access(spec),
        )


class RetireOperator(BlueGreenDeployOperator):
    """Remove the old colour once ``scale_down_delay`` has passed since the switch (it stays
    warm until then, so a rollback is a switch back). ``image`` is not used. ``deferrable``
    (default: ``[operators] default_deferrable``): a wait of 30 s or more until then runs in
    the triggerer, holding no worker slot; the task then looks again and retires (or waits
    again, after a switch back)."""

    def __init__(self, *, image: str = "", **kwargs: Any) -> None:
        super().__init__(image=image, **kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        from docker_delivery.errors import RetireNotDue

        try:
            return super().execute(context)
        except RetireNotDue as exc:
            from airflow.providers.standard.triggers.temporal import DateTimeTrigger

            left = exc.due.timestamp() - time.time()
            if left < SHORTEST_DEFERRAL:
                self.log.info("%s: waiting %.1fs", exc, max(0.0, left))
                time.sleep(max(0.0, left))
                return super().execute(context)
            self.log.info("%s: waiting in the triggerer", exc)
            self.defer(trigger=DateTimeTrigger(moment=exc.due), method_name="execute_complete")
            raise  # not reached: defer() raises TaskDeferred

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        return self.execute(context)

    def on_ecs(self, ctx: EcsContext, spec: ServiceSpec) -> Outcome:
        raise TargetError("on ECS the blue/green deploy step checks, switches and retires")

    def deliver(self, client: Any, spec: ServiceSpec | None, context: Context) -> Outcome:
        from docker_delivery.strategies.bluegreen import retire

        return retire(
            client,
            self.service,
            self.environment,
            self.settings_of(spec, BlueGreen),
            wait=not self.deferrable,
            **self.wiring(spec, context),
        )


class ABDeployOperator(_HandsOver):
    """A/B test: variant B (``image``) takes ``steps`` percent of new clients (sticky by cookie),
    pre-warmed ahead of each step; each step bakes ``bake_time`` s while the router's own
    counters are analysed (5xx ratio, response time); a bad step aborts back to A by itself;
    100 % promotes B and retires A (:class:`~docker_delivery.strategies.settings.ABTest`).

    ``deferrable`` (default: ``[operators] default_deferrable``): a bake of 30 s or more runs
    in the triggerer (:class:`~docker_delivery.triggers.ab.ABBakeTrigger`), holding no worker
    slot; the task sets a step's weights, defers, and resumes with the verdict: the next step,
    or, on a breach, the abort (the trigger has already routed every client back to A). The
    deployment lock stays this task's while it bakes. The result tells every step, as one
    try's would."""

    settings_model = ABTest
    handed_key = "bake"

    def deliver(self, client: Any, spec: ServiceSpec | None, context: Context) -> Outcome:
        from docker_delivery.strategies.ab import ab_deploy
        from docker_delivery.strategies.ab_analysis import BakeReport

        settings = self.settings_of(spec, ABTest)
        return ab_deploy(
            client,
            self.release(spec),
            settings,
            dry_run=self.plan_only,
            bake_elsewhere=self.hands_over(settings.bake_time),
            baked=None if self._report is None else BakeReport.from_dict(self._report),
            **self.wiring(spec, context),
        )

    def trigger_for(self, handed: dict[str, Any], spec: ServiceSpec | None) -> BaseTrigger:
        from docker_delivery.triggers.ab import ABBakeTrigger

        return ABBakeTrigger(
            self.service,
            self.environment,
            self.settings_of(spec, ABTest),
            handed,
            **self.router_access(spec),
        )


class RollbackOperator(_DeployOperator):
    """Return the service in the environment to its previous release: a switch back where the old
    release is still warm (blue/green, A/B), a redeploy of the previous digest in batches
    otherwise, on the engine or Swarm (what runs tells which). Everything is read from the
    running objects' labels and the router, so it works after a worker crash. With
    ``database_conn_id``, a rollback past a contract migration is refused before anything
    changes. ``image`` is not used. With ``repository`` (and the registry's ``docker_conn_id``),
    the environment tag ``<repository>:<environment>`` moves back to the release that serves
    again, as a pipeline's promotion does (it names what serves there). With ``if_serving`` (an
    image by digest; templated), only that release is undone, back to ``back_to`` (templated:
    what served before it) when given: when it replaced nothing, or something else serves (it
    never got there, or is back already), nothing changes; a release's rollback task uses it."""

    template_fields: Sequence[str] = (*_DeployOperator.template_fields, "if_serving", "back_to")

    def __init__(
        self,
        *,
        image: str = "",
        if_serving: str | None = None,
        back_to: str | None = None,
        database_conn_id: str | None = None,
        migration_status_command: Sequence[str] | None = None,
        repository: str | None = None,
        docker_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(image=image, **kwargs)
        self.if_serving, self.back_to = if_serving, back_to
        self.database_conn_id = database_conn_id
        self.migration_status_command = migration_status_command
        self.repository = repository
        self.docker_conn_id = docker_conn_id

    def on_ecs(self, ctx: EcsContext, spec: ServiceSpec) -> Outcome:
        """A switch back to the colour still warm (blue/green, A/B), or the service's previous
        task definition revision (minimum in-service, rolling)."""
        from docker_delivery.strategies.aws import roll_back

        return roll_back(ctx)

    def execute_on_ecs(self, spec: ServiceSpec, context: Context) -> dict[str, Any]:
        """The rollback on ECS, then (with ``repository``) the environment tag back to the
        release ECS serves again."""
        out = super().execute_on_ecs(spec, context)
        if self.repository and not self.plan_only:
            from docker_delivery.hooks.registry import RegistryHook
            from docker_delivery.images.promotion import promote
            from docker_delivery.images.ref import ImageRef

            serving = str(out.get("to_digest") or out["digest"])  # rolled back, or switched back
            image = ImageRef.parse(str(self.repository)).with_digest(serving)
            with RegistryHook(self.docker_conn_id).get_client(image.registry) as registry:
                moved = promote(registry, image, self.environment, log=self.log.info)
            out["tag"] = moved.as_dict()
        return out

    def deliver(self, client: Any, spec: ServiceSpec | None, context: Context) -> Outcome:
        from docker_delivery.strategies.rollback import roll_back

        kwargs: dict[str, Any] = dict(
            router=self.router(spec),
            check=self.check(spec),
            owner=lock_owner(context),
            target=self.target,  # None: what runs tells
        )
        if self.if_serving:
            from docker_delivery.images.ref import ImageRef
            from docker_delivery.strategies.rollback import nothing_to_undo

            digest = str(ImageRef.parse(str(self.if_serving)).require_pinned().digest)
            to_digest = str(self.back_to or "") or None
            nothing = nothing_to_undo(
                client, self.service, self.environment, digest, back_to=to_digest, **kwargs
            )
            if nothing is not None:
                self.log.info(
                    "%s/%s: nothing of the release %s to undo: %s",
                    self.service, self.environment, digest, nothing.why,
                )  # fmt: skip
                return nothing
            kwargs["to_digest"] = to_digest
        if self.database_conn_id:
            plan = roll_back(client, self.service, self.environment, dry_run=True, **kwargs)
            self._check_schema(client, plan.to_digest, context)
        result = roll_back(
            client,
            self.service,
            self.environment,
            stop_grace=self.stop_grace,
            lock_wait=self.lock_wait,
            dry_run=self.plan_only,
            log=self.log.info,
            **kwargs,
        )
        if self.repository and not self.plan_only:
            self._move_tag_back(client, result.to_digest, context)
        return result

    def _move_tag_back(self, client: Any, digest: str, context: Context) -> None:
        from docker_delivery.images.ref import ImageRef

        tag_what_serves(
            client,
            ImageRef.parse(str(self.repository)).with_digest(digest),
            self.environment,
            service=self.service,
            port=self.app_port,
            docker_conn_id=self.docker_conn_id,
            context=context,
            lock_wait=self.lock_wait,
            log=self.log.info,
        )

    def _check_schema(self, client: Any, digest: str, context: Context) -> None:
        from docker_delivery.hooks.database import database_from_connection
        from docker_delivery.migrations import MigrationRunner, MigrationSpec
        from docker_delivery.strategies.state import list_running

        running = list_running(client, self.service, self.environment, self.app_port)
        images = {r.digest: r.image for r in running}
        images.update({r.previous_digest: r.previous_image for r in running if r.previous_image})
        db = database_from_connection(str(self.database_conn_id))
        spec_kwargs: dict[str, Any] = {"image": images.get(digest, digest), "phase": "expand"}
        if self.migration_status_command:
            spec_kwargs["status_command"] = tuple(self.migration_status_command)
        MigrationRunner(client, self.log.info, owner=lock_owner(context)).check_rollback(
            MigrationSpec(**spec_kwargs), db
        )


class AbortRolloutOperator(_DeployOperator):
    """Abort a rollout of ``image`` held for a decision (``hold_after`` of a rolling deployment
    or an A/B test, ``hold_before_switch`` of blue/green): what served before the delivery
    serves as before, the release under way is drained and removed
    (:func:`~docker_delivery.strategies.abort.abort_rollout`). ``settings``: the held
    deployment's (its type tells what to undo). Safe to run again: a second abort finds nothing
    to do."""

    def __init__(
        self, *, settings: DeploySettings | Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.settings = _held_settings(settings)

    def on_ecs(self, ctx: EcsContext, spec: ServiceSpec) -> Outcome:
        raise TargetError("on ECS a deployment is never held: the deploy task runs it whole")

    def deliver(self, client: Any, spec: ServiceSpec | None, context: Context) -> Outcome:
        from docker_delivery.strategies.abort import abort_rollout

        return abort_rollout(
            client,
            self.release(spec),
            self.deploy_settings(spec),
            **self.wiring(spec, context),
        )


def _held_settings(settings: DeploySettings | Mapping[str, Any] | None) -> DeploySettings:
    """The settings of a deployment type that can be held, validated now (parse time)."""
    if isinstance(settings, DeploySettings):
        return settings
    models: dict[str, type[DeploySettings]] = {m.model_fields["type"].default: m for m in HELD}
    data = dict(settings or {})
    model = models.get(str(data.get("type")))
    if model is None:
        raise ValueError(f"settings: give the held deployment's, of type {sorted(models)}")
    return model.of(data)


HELD: tuple[type[DeploySettings], ...] = (Rolling, BlueGreen, ABTest)
"""The deployment types a pipeline can hold for a decision."""
