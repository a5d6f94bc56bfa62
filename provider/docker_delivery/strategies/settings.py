"""One settings model per deployment type, with its defaults and its validation in one place.

The same model is the ``deploy`` section of a pipeline spec (a discriminated union on ``type``),
what a deployment operator takes (``settings=``, or the fields as keyword arguments), and what a
runner executes. Settings that depend on the environment are None until the environment fills
them (:meth:`DeploySettings.defaulted`): the number of replicas, how many stay in service, the
rolling stages, how long a drain may take, the grace before SIGKILL.

Built from Python (``MinimumInService(4, 2)``, positional arguments in field order), a bad value
raises :class:`~docker_delivery.errors.DeploySettingsInvalid` naming the field; read from a
spec, the spec's loader reports it with its field path. A check across fields names its field
first (``min_in_service: ...``).

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import builtins
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from docker_delivery.errors import DeploySettingsInvalid
from docker_delivery.spec.messages import plain_message
from docker_delivery.targets.swarm import UpdatePolicy

__all__ = [
    "ABTest",
    "BlueGreen",
    "DeploySettings",
    "MinimumInService",
    "Rolling",
    "resolve_stages",
    "validating_a_spec",
]

_S = TypeVar("_S", bound="DeploySettings")
Seconds = Annotated[float, Field(ge=0)]
PositiveSeconds = Annotated[float, Field(gt=0)]
Replicas = Annotated[int, Field(ge=1)]
Ratio = Annotated[float, Field(ge=0, le=1)]


def resolve_stages(stages: Sequence[int | str], replicas: int) -> list[int]:
    """``[1, "50%", "100%"]`` -> absolute counts of new replicas, validated."""
    if replicas < 1:
        raise DeploySettingsInvalid(f"replicas must be >= 1, got {replicas}")
    if not stages:
        raise DeploySettingsInvalid("stages must not be empty; e.g. [1, '50%', '100%']")
    counts = []
    for stage in stages:
        if isinstance(stage, str) and stage.endswith("%"):
            try:
                pct = float(stage[:-1])
            except ValueError:
                raise DeploySettingsInvalid(f"stage {stage!r} is not a percentage") from None
            if not 0 < pct <= 100:
                raise DeploySettingsInvalid(f"stage {stage!r} must be in (0%, 100%]")
            counts.append(max(1, math.ceil(replicas * pct / 100)))
        elif isinstance(stage, int) and not isinstance(stage, bool):
            if not 1 <= stage <= replicas:
                raise DeploySettingsInvalid(
                    f"stage {stage} must be within 1..replicas ({replicas})"
                )
            counts.append(stage)
        else:
            raise DeploySettingsInvalid(f"stage {stage!r} must be a count or a percentage ('50%')")
    if any(b <= a for a, b in itertools.pairwise(counts)):
        raise DeploySettingsInvalid(
            f"stage targets must increase: {list(stages)} resolve to {counts} of {replicas}"
        )
    if counts[-1] != replicas:
        raise DeploySettingsInvalid(
            f"the last stage must be 100% ({replicas}), got {counts[-1]}; to stop a rollout "
            "partway, use until_stage and run the deployment again to continue"
        )
    return counts


def _increasing(value: tuple[int, ...]) -> tuple[int, ...]:
    if any(b <= a for a, b in itertools.pairwise(value)):
        raise ValueError(f"must increase, got {list(value)}")
    return value


class DeploySettings(BaseModel):
    """What every deployment type's settings share: validation, positional construction, and
    defaults from the environment."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    type: str
    replicas: Replicas | None = None  # None: the environment's (or, blue/green, A/B: the live)
    # Fields the environment fills when the spec leaves them out (see defaulted()).
    FROM_ENVIRONMENT: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *args: Any, **data: Any) -> None:
        names = [n for n in type(self).model_fields if n != "type"]
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional values")
        data.update(zip(names, args, strict=False))
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if _IN_A_SPEC.get():  # the spec's loader reports it, with its field path
                raise
            raise DeploySettingsInvalid(_first_problem(exc)) from None

    @classmethod
    def of(
        cls: builtins.type[_S],
        settings: DeploySettings | Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> _S:
        """``settings`` (a model or its fields) with ``fields`` over it, validated; fields alone
        too."""
        if isinstance(settings, DeploySettings):
            data = settings.model_dump(exclude={"type"}, exclude_unset=True)
        else:
            data = {k: v for k, v in dict(settings or {}).items() if k != "type"}
        return cls(**{**data, **fields})

    def defaulted(self: _S, **environment: Any) -> _S:
        """These settings with what the environment says for the fields they leave unset (None,
        or a default the spec did not write), validated again: the settings a runner takes."""
        given = {k: v for k, v in environment.items() if v is not None}
        unset = {
            k: v
            for k, v in given.items()
            if k in type(self).model_fields
            and (getattr(self, k) is None or k not in self.model_fields_set)
        }
        data = {**self.model_dump(exclude={"type"}, exclude_unset=True), **unset}
        return type(self)(**data)

    @property
    def count(self) -> int:
        """``replicas``, once the environment has filled it."""
        if self.replicas is None:
            raise DeploySettingsInvalid("replicas: not set (the environment gives it)")
        return self.replicas

    def as_data(self) -> dict[str, Any]:
        """Plain JSON-able data (a DAG's serialized form, an XCom)."""
        return self.model_dump(mode="json")


_IN_A_SPEC: ContextVar[bool] = ContextVar("docker_delivery_validating_a_spec", default=False)


@contextmanager
def validating_a_spec() -> Iterator[None]:
    """While a spec is validated, settings that do not validate raise pydantic's error, so that
    the spec's loader names the field with its whole path."""
    token = _IN_A_SPEC.set(True)
    try:
        yield
    finally:
        _IN_A_SPEC.reset(token)


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    message = plain_message(err)
    where = ".".join(str(p) for p in err["loc"])
    return f"{where} {message}" if where else message


class MinimumInService(DeploySettings):
    """Minimum in-service on one engine: ``replicas`` containers replaced in batches of at most
    ``replicas - min_in_service`` (or ``batch_sizes``), never fewer than ``min_in_service``
    serving. ``drain_timeout``: seconds an instance may take to finish its requests in flight;
    past it the batch goes back to the old release. Left out of a spec, ``replicas`` is the
    environment's, ``min_in_service`` its ``rollout.min_in_service`` or else half of them."""

    type: Literal["min_in_service"] = "min_in_service"
    min_in_service: Annotated[int, Field(ge=0)] | None = None
    batch_sizes: tuple[Annotated[int, Field(ge=1)], ...] | None = Field(default=None, strict=False)
    drain_timeout: PositiveSeconds = 120.0
    router_up_timeout: PositiveSeconds = 30.0

    FROM_ENVIRONMENT: ClassVar[tuple[str, ...]] = ("replicas", "min_in_service", "drain_timeout")

    @model_validator(mode="after")
    def _consistent(self) -> MinimumInService:
        if self.replicas is None:
            return self
        replicas, keep = self.replicas, self.min_in_service
        if keep is not None and not 0 <= keep < replicas:
            raise ValueError(
                f"min_in_service must be in 0..replicas-1 (0..{replicas - 1}), got {keep}: with "
                "min_in_service >= replicas no instance may ever be taken out to be replaced"
            )
        if self.batch_sizes is not None:
            sizes, most = tuple(self.batch_sizes), replicas - (keep or 0)
            if not sizes:
                raise ValueError("batch_sizes must not be empty")
            if any(s > most for s in sizes):
                raise ValueError(
                    f"batch_sizes {list(sizes)} would take more than replicas - min_in_service "
                    f"= {most} instances out of service at once"
                )
            if sum(sizes) != replicas:
                raise ValueError(f"batch_sizes {list(sizes)} must add up to replicas ({replicas})")
        return self

    @property
    def keep(self) -> int:
        """How many stay in service: ``min_in_service``, else half (at least one of two)."""
        if self.min_in_service is not None:
            return self.min_in_service
        return max(1, self.count // 2) if self.count >= 2 else 0

    def slots_needed(self) -> int:
        """Router slots it uses: instance ``k`` serves in slot ``k``, never more than replicas."""
        return self.count

    def batches(self, todo: Sequence[int]) -> list[tuple[int, ...]]:
        """Split the slots still to replace into batches."""
        sizes = list(self.batch_sizes or ())
        most = self.count - self.keep
        out: list[tuple[int, ...]] = []
        rest = list(todo)
        while rest:
            size = sizes.pop(0) if sizes else most
            out.append(tuple(rest[:size]))
            rest = rest[size:]
        return out


class Rolling(DeploySettings):
    """A staged rolling deployment on Swarm: ``stages`` such as ``[1, "50%", "100%"]`` shift
    replicas from the old release's service to the new one's; ``pause`` seconds between
    stages; ``until_stage`` stops after that stage (a later run carries on); ``failure_action``
    pause, continue or rollback. ``hold_after``: stage numbers after which a pipeline's rollout
    waits for a human's Continue or Abort (a task of its own, holding no worker slot). Left out
    of a spec, ``replicas`` is the environment's and ``stages`` its ``rollout.stages``."""

    type: Literal["rolling"] = "rolling"
    stages: tuple[int | str, ...] = Field(default=("100%",), strict=False)
    pause: Seconds = 0.0
    failure_action: Literal["pause", "continue", "rollback"] = "rollback"
    until_stage: Annotated[int, Field(ge=1)] | None = None
    hold_after: tuple[Annotated[int, Field(ge=1)], ...] = Field(default=(), strict=False)
    update_config: UpdatePolicy = Field(default_factory=UpdatePolicy)
    rollback_config: UpdatePolicy = Field(default_factory=UpdatePolicy)
    drain_timeout: PositiveSeconds = 120.0
    start_timeout: PositiveSeconds = 120.0
    router_up_timeout: PositiveSeconds = 30.0

    FROM_ENVIRONMENT: ClassVar[tuple[str, ...]] = ("replicas", "stages", "drain_timeout")

    @field_validator("update_config", "rollback_config", mode="before")
    @classmethod
    def _policy(cls, value: Any) -> Any:
        return UpdatePolicy(**value) if isinstance(value, Mapping) else value

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_items(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            for item in value:
                ok_int = isinstance(item, int) and not isinstance(item, bool)
                if not ok_int and not (isinstance(item, str) and item.endswith("%")):
                    raise ValueError(f"{item!r} is neither a count nor a percentage ('50%')")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Rolling:
        if self.replicas is None:
            return self
        try:
            counts = resolve_stages(self.stages, self.replicas)
        except DeploySettingsInvalid as exc:
            raise ValueError(f"stages: {exc}") from None
        if self.until_stage is not None and not 1 <= self.until_stage <= len(counts):
            raise ValueError(
                f"until_stage {self.until_stage} must be within 1..{len(counts)} (the stages)"
            )
        if bad := [n for n in self.hold_after if n >= len(counts)]:
            raise ValueError(
                f"hold_after: {bad[0]} is not a stage followed by another (stages "
                f"1..{len(counts) - 1} of {len(counts)})"
            )
        return self

    @field_validator("hold_after")
    @classmethod
    def _holds(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return _increasing(value)

    @property
    def counts(self) -> list[int]:
        return resolve_stages(self.stages, self.count)

    def slots_needed(self, old: int | None = None) -> int:
        """Router slots the rollout takes at its peak: each stage routes its new tasks before
        the old ones it replaces leave. ``old``: old tasks at the start (default: replicas)."""
        old = self.count if old is None else old
        peak = before = 0
        for count in self.counts:
            peak = max(peak, count + min(old, self.count - before))
            before = count
        return peak


class BlueGreen(DeploySettings):
    """Blue/green: the new colour at full size (``replicas``; None: as many as the live group
    has), ``preview_replicas`` of them first (on the preview port), then all traffic at once.
    ``hold_before_switch``: in a pipeline, a human's Continue (switch) or Abort (the new colour
    removed, nothing switched) after the preview's check.
    ``post_switch_check`` seconds after the switch the new colour is watched: an instance
    failing its check or exiting, or more than ``max_5xx_ratio`` of at least ``min_requests``
    requests failing at the router, switches traffic back by itself. The old colour stays warm
    ``scale_down_delay`` seconds (a rollback is a switch back), then is retired; ``stop_grace``:
    SIGTERM to SIGKILL then."""

    type: Literal["blue_green"] = "blue_green"
    preview_replicas: Replicas | None = None
    hold_before_switch: bool = False
    scale_down_delay: Seconds = 300.0
    post_switch_check: Seconds = 10.0
    max_5xx_ratio: Ratio = 0.01
    min_requests: Annotated[int, Field(ge=0)] = 20
    stop_grace: Seconds = 30.0
    drain_timeout: PositiveSeconds = 120.0
    router_up_timeout: PositiveSeconds = 30.0

    FROM_ENVIRONMENT: ClassVar[tuple[str, ...]] = ("replicas", "stop_grace", "drain_timeout")

    @model_validator(mode="after")
    def _consistent(self) -> BlueGreen:
        if (
            self.preview_replicas is not None
            and self.replicas is not None
            and self.preview_replicas > self.replicas
        ):
            raise ValueError(f"preview_replicas: must be within 1..replicas ({self.replicas})")
        return self

    def full_size(self, live_count: int) -> int:
        size = self.replicas if self.replicas is not None else live_count
        if size < 1:
            raise DeploySettingsInvalid(
                "nothing is live to size the new colour from: give BlueGreen(replicas=...)"
            )
        return size


class ABTest(DeploySettings):
    """A/B: variant B takes ``steps`` percent of new clients (sticky by cookie), increasing
    within 1..100 and ending at 100 (promotion), pre-warmed ahead of each step; each step bakes
    ``bake_time`` seconds over at least ``min_requests`` requests (``max_bake_time``, default 5 x
    ``bake_time``: how long it may wait for them), and a step above ``max_5xx_ratio`` errors or
    ``max_response_ms`` goes back to A by itself. ``replicas``: B's full size (None: as many as A
    has). ``until_step``: stop after that step (B keeps its share; a later run carries on);
    ``hold_after``: step numbers after which a pipeline's test waits for a human's Continue or
    Abort (back to A)."""

    type: Literal["ab"] = "ab"
    steps: tuple[int, ...] = Field(default=(5, 25, 50, 100), strict=False)
    bake_time: Seconds = 30.0
    max_5xx_ratio: Ratio = 0.01
    max_response_ms: Annotated[float, Field(gt=0)] | None = None
    min_requests: Annotated[int, Field(ge=1)] = 20
    max_bake_time: Seconds | None = None
    poll: PositiveSeconds = 0.5
    stop_grace: Seconds = 30.0
    drain_timeout: PositiveSeconds = 120.0
    router_up_timeout: PositiveSeconds = 30.0
    until_step: Annotated[int, Field(ge=1)] | None = None
    hold_after: tuple[Annotated[int, Field(ge=1)], ...] = Field(default=(), strict=False)

    FROM_ENVIRONMENT: ClassVar[tuple[str, ...]] = ("replicas", "stop_grace", "drain_timeout")

    @field_validator("hold_after")
    @classmethod
    def _holds(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return _increasing(value)

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("must not be empty; e.g. [5, 25, 50, 100]")
        if any(not 1 <= s <= 100 for s in value):
            raise ValueError(f"each step is a percentage within 1..100 (%), got {list(value)}")
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError(f"must increase, got {list(value)}")
        if value[-1] != 100:
            raise ValueError(
                f"the last step must be 100 (B takes all, then it is promoted), got {value[-1]}"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ABTest:
        if self.max_bake_time is not None and self.max_bake_time < self.bake_time:
            raise ValueError(
                f"max_bake_time: ({self.max_bake_time}) must be >= bake_time ({self.bake_time})"
            )
        last = len(self.steps)
        if self.until_step is not None and self.until_step >= last:
            raise ValueError(
                f"until_step: {self.until_step} must be within 1..{last - 1} (the last step "
                "promotes B)"
            )
        if bad := [n for n in self.hold_after if n >= last]:
            raise ValueError(
                f"hold_after: {bad[0]} is not a step followed by another (steps 1..{last - 1} "
                f"of {last})"
            )
        return self

    @property
    def longest_bake(self) -> float:
        return self.max_bake_time if self.max_bake_time is not None else 5 * self.bake_time

    def b_count(self, total: int, weight: int) -> int:
        """B instances needed at ``weight`` so that none takes more than its share."""
        return max(1, math.ceil(total * weight / 100))
