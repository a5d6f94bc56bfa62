"""The ``aws`` section of an environment that runs on Amazon ECS (``target: ecs``)::

    environments:
      prod:
        target: ecs
        replicas: 4
        secrets:                          # Secrets Manager or SSM parameter ARNs: ECS injects
                                          # them at run time
          - {name: DATABASE_URL, from: aws_secret_arn, ref: "arn:aws:secretsmanager:..."}
        aws:
          conn_id: aws_default            # the Airflow connection (credentials, region)
          region: eu-west-1
          cluster: shop
          subnets: [subnet-0a1b2c]
          security_groups: [sg-0a1b2c]
          cpu: 512
          memory: 1024
          alarms: [api-5xx]               # in ALARM during a deployment or a bake: it stops
          public_url: https://api.shop.example.com/   # where smoke tests reach the service
          target_group: arn:aws:elasticloadbalancing:...  # min_in_service, rolling: its
                                          # targets all healthy is the gate of each step
          router:                         # blue/green and A/B: alb or route53
            type: alb
            listener_arn: arn:aws:elasticloadbalancing:...:listener/app/shop/...
            test_listener_arn: arn:...    # the idle colour, before it takes traffic
            target_groups: {blue: arn:..., green: arn:...}
            stickiness: 300               # seconds a client keeps its target group (A/B)

``router`` may instead be ``type: route53`` with ``zone_id``, ``record_name``, ``ttl``,
``connection_lifetime`` (how long a client keeps a connection), ``retire_wait`` (how long the
old colour serves after a switch: at least the TTL plus the connection lifetime) and
``targets`` (each colour's ``alias`` to its load balancer, or its ``values``). Everything is
checked when the spec is read: more than 5 target groups, a weight out of 0-999 (ALB) or 0-255
(Route 53), a wait shorter than the TTL are refused, naming the field.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from docker_delivery.routing.alb import MAX_GROUPS
from docker_delivery.routing.alb import MAX_WEIGHT as ALB_MAX_WEIGHT
from docker_delivery.routing.route53 import MAX_WEIGHT as DNS_MAX_WEIGHT

COLOURS = ("blue", "green")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


ELB_ARN = r"^arn:aws[a-z-]*:elasticloadbalancing:"
ElbArn = Annotated[str, Field(pattern=ELB_ARN)]
"""An Elastic Load Balancing ARN (a listener, a target group)."""


class TargetGroupSpec(_Model):
    """A target group, and the weight it starts with when the listener is first set up."""

    arn: ElbArn
    weight: Annotated[int, Field(ge=0, le=ALB_MAX_WEIGHT)] = 0


def _arn_or_group(schema: dict[str, Any]) -> None:
    """The JSON Schema (for editors) says what :meth:`AlbRouterSpec._arns` takes: a target
    group's ARN alone, or the group."""
    schema["additionalProperties"] = {
        "anyOf": [
            {"type": "string", "pattern": ELB_ARN},
            schema["additionalProperties"],
        ]
    }


class AlbRouterSpec(_Model):
    type: Literal["alb"]
    listener_arn: ElbArn
    test_listener_arn: ElbArn | None = None
    target_groups: Annotated[dict[str, TargetGroupSpec], Field(json_schema_extra=_arn_or_group)]
    stickiness: Annotated[int, Field(ge=1, le=604800)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _arns(cls, data: Any) -> Any:
        """A target group may be given by its ARN alone."""
        if isinstance(data, dict) and isinstance(data.get("target_groups"), dict):
            groups = {
                k: ({"arn": v} if isinstance(v, str) else v)
                for k, v in data["target_groups"].items()
            }
            data = {**data, "target_groups": groups}
        return data

    @model_validator(mode="after")
    def _groups(self) -> AlbRouterSpec:
        if len(self.target_groups) > MAX_GROUPS:
            raise ValueError(
                f"target_groups: {len(self.target_groups)} given; an ALB listener forwards to "
                f"at most {MAX_GROUPS}"
            )
        missing = [c for c in COLOURS if c not in self.target_groups]
        if missing:
            raise ValueError(f"target_groups: needs {list(COLOURS)} (missing {missing})")
        return self

    @property
    def arns(self) -> dict[str, str]:
        return {name: group.arn for name, group in self.target_groups.items()}


class DnsTargetSpec(_Model):
    """A colour's record: an ``alias`` to its load balancer, or its ``values``."""

    alias: dict[str, str | bool] | None = None
    values: list[str] | None = None
    weight: Annotated[int, Field(ge=0, le=DNS_MAX_WEIGHT)] = 0

    @model_validator(mode="after")
    def _one(self) -> DnsTargetSpec:
        if (self.alias is None) == (self.values is None):
            raise ValueError("give either alias ({HostedZoneId, DNSName}) or values")
        return self

    def as_target(self) -> dict[str, Any]:
        return {"alias": dict(self.alias)} if self.alias is not None else {"values": self.values}


class Route53RouterSpec(_Model):
    type: Literal["route53"]
    zone_id: Annotated[str, Field(min_length=1)]
    record_name: Annotated[str, Field(min_length=1)]
    record_type: Literal["A", "AAAA", "CNAME"] = "A"
    ttl: Annotated[int, Field(ge=0, le=172800)] = 60
    connection_lifetime: Annotated[float, Field(ge=0)] = 0.0
    retire_wait: Annotated[float, Field(ge=0)] | None = None
    targets: dict[str, DnsTargetSpec]

    @model_validator(mode="after")
    def _waits(self) -> Route53RouterSpec:
        missing = [c for c in COLOURS if c not in self.targets]
        if missing:
            raise ValueError(f"targets: needs {list(COLOURS)} (missing {missing})")
        least = self.ttl + self.connection_lifetime
        if self.retire_wait is not None and self.retire_wait < least:
            raise ValueError(
                f"retire_wait: {self.retire_wait:g}s is shorter than the record's TTL plus the "
                f"connection lifetime ({self.ttl}s + {self.connection_lifetime:g}s = {least:g}s): "
                "resolvers and open connections would still reach the old colour when it goes"
            )
        return self

    @property
    def hold_s(self) -> float:
        """How long the old colour serves after a switch."""
        return (
            self.retire_wait
            if self.retire_wait is not None
            else self.ttl + self.connection_lifetime
        )


class AwsSpec(_Model):
    """Where an ``ecs`` environment runs, and how its traffic moves."""

    conn_id: str = "aws_default"
    region: str | None = None
    cluster: Annotated[str, Field(min_length=1)]
    launch_type: Literal["FARGATE", "EC2"] = "FARGATE"
    subnets: list[str] = Field(default_factory=list)
    security_groups: list[str] = Field(default_factory=list)
    assign_public_ip: bool = False
    cpu: Annotated[int, Field(ge=128)] = 256
    memory: Annotated[int, Field(ge=128)] = 512
    execution_role_arn: str | None = None
    alarms: list[str] = Field(default_factory=list)
    bake: Annotated[float, Field(ge=0)] = 0.0
    deploy_timeout: Annotated[float, Field(gt=0)] = 900.0
    public_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    # minimum in-service and rolling: the target group the service's tasks register in; every
    # target healthy is the health gate of each step (ALB's own health checks)
    target_group: ElbArn | None = None
    router: Annotated[AlbRouterSpec | Route53RouterSpec, Field(discriminator="type")] | None = None

    @model_validator(mode="after")
    def _subnets(self) -> AwsSpec:
        if self.launch_type == "FARGATE" and not self.subnets:
            raise ValueError(
                "subnets: Fargate tasks run in the subnets (and security groups) given here "
                "(network mode awsvpc)"
            )
        return self

    def network(self) -> dict[str, Any] | None:
        if not self.subnets:
            return None
        return {
            "subnets": list(self.subnets),
            "securityGroups": list(self.security_groups),
            "assignPublicIp": "ENABLED" if self.assign_public_ip else "DISABLED",
        }
