"""The environment spec of a service: how it runs in each environment, validated before anything.

One :class:`ServiceSpec` per service: shared ``defaults`` and, per environment, what that
environment overrides ("keep your environments similar": the overrides are the declared
differences between environments). An environment's spec is the defaults with its overrides
merged in: mappings (``env``, ``labels``, ``router``, ``health_check``, ``resources``,
``rollout``) key by key, ``secrets`` by name, lists (``networks``, ``command``) replaced::

    service: web
    image: 127.0.0.1:5000/shop/web          # the repository the pipeline builds (optional)
    defaults:
      target: engine                        # engine | swarm | ecs (with an aws section)
      replicas: 2
      port: 8080                            # the app's port in its containers
      env: {LOG_LEVEL: info}
      secrets:                              # by reference only, never a value
        - {name: DB_PASSWORD, from: airflow_connection, ref: shop_db}
      resources: {cpus: 0.5, memory: 256m}
      health_check: {path: /health, interval: 1}
      router: {image: haproxy:lts}
    environments:
      staging:
        router: {port: 18080}
      prod:
        replicas: 4
        env: {LOG_LEVEL: warn}
        router: {port: 8080}

Every model refuses unknown keys, and values keep their YAML types (``replicas: "3"`` and
``DEBUG: true`` are refused, not converted: YAML reads ``NO`` as false). :func:`load_spec` turns
every problem into one line naming its field path and environment
(``environments.prod.replicas: must be >= 0``) in a :class:`SpecInvalid`.

Secrets are references: ``{name, from: airflow_connection | airflow_variable | docker_secret |
aws_secret_arn, ref}``, resolved when a step runs. A literal value is refused, and so is a literal
in an env variable whose name says it is a secret (``*_PASSWORD``, ``*_SECRET``, ``*_TOKEN``,
``*_KEY``, ...), unless the environment lists the name in ``not_secrets``.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from docker_delivery.errors import DeliveryError, SpecInvalid, clip
from docker_delivery.health import HealthCheck, HealthCheckInvalid
from docker_delivery.images.ref import ImageRef
from docker_delivery.routing.service import RouterSettings
from docker_delivery.spec.aws import AwsSpec
from docker_delivery.spec.loader import load_yaml, read_source
from docker_delivery.spec.messages import describe_errors
from docker_delivery.targets.base import Limits, Release, SecretMount
from docker_delivery.targets.labels import LABEL_PREFIX

SECRET_SOURCES = ("airflow_connection", "airflow_variable", "docker_secret", "aws_secret_arn")
SecretSource = Literal["airflow_connection", "airflow_variable", "docker_secret", "aws_secret_arn"]
# A name whose last word is one of these holds a secret (DB_PASSWORD, API_TOKEN, SECRET_KEY).
SECRET_WORDS = frozenset(
    {"PASSWORD", "PASSWD", "PASS", "SECRET", "TOKEN", "KEY", "APIKEY", "PASSPHRASE"}
    | {"CREDENTIAL", "CREDENTIALS", "PRIVATEKEY"}
)
CONNECTION_KEYS = ("password", "login", "host", "schema", "port", "uri")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
_NETWORK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_./-]*[A-Za-z0-9])?$")
_AIRFLOW_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_DOCKER_SECRET = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9])?$")
_ARN = re.compile(
    r"^arn:aws[a-z-]*:(?:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+"
    r"|ssm:[a-z0-9-]+:\d{12}:parameter/[A-Za-z0-9/_.-]+)$"
)
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$")
_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    **{u: 1024 for u in ("k", "kb", "ki", "kib")},
    **{u: 1024**2 for u in ("m", "mb", "mi", "mib")},
    **{u: 1024**3 for u in ("g", "gb", "gi", "gib")},
    **{u: 1024**4 for u in ("t", "tb", "ti", "tib")},
}
_LITERAL_SECRET = (
    "a literal secret value is refused: reference it instead, as {name: NAME, from: "
    "airflow_connection | airflow_variable | docker_secret | aws_secret_arn, ref: <id>}"
)


def looks_secret(name: str) -> bool:
    """True when a variable's name says it holds a secret: its last word is one of
    :data:`SECRET_WORDS` (``DB_PASSWORD``, ``apiToken``, ``AWS_SECRET_ACCESS_KEY``; not
    ``PASSWORD_FILE``, ``TOKEN_URL`` or ``KEY_PREFIX``). Words are also split at ``.``, ``-``
    and ``/``, as in a label key (``com.example.api-token``)."""
    words = [w for w in re.split(r"[_.\-/]+|(?<=[a-z0-9])(?=[A-Z])", name) if w]
    return bool(words) and words[-1].upper() in SECRET_WORDS


def parse_memory(value: object) -> int:
    """``"512m"``, ``"1g"``, ``"256Mi"``, ``"1.5GiB"`` or a number of bytes -> bytes (binary
    units, as ``docker run --memory``)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("must be a size such as 512m or 1g")
    if isinstance(value, int):
        size = value
    else:
        match = _MEMORY.match(value.strip())
        unit = match.group(2).lower() if match else "?"
        if match is None or unit not in _MEMORY_UNITS:
            raise ValueError(
                f"{value!r} is not a size: a number with a unit b, k, m, g or t "
                "(binary, as docker run --memory), e.g. 512m or 1g"
            )
        size = int(float(match.group(1)) * _MEMORY_UNITS[unit])
    if size < 6 * 1024 * 1024:
        raise ValueError("must be at least 6m (Docker's minimum)")
    return size


def _pattern(regex: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not regex.match(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return check


def _label_key(value: str) -> str:
    if value.startswith(LABEL_PREFIX):
        raise ValueError(
            f"{value!r}: the prefix {LABEL_PREFIX!r} is reserved for docker-delivery's own labels"
        )
    return _pattern(_LABEL_KEY, "a valid label key (letters, digits, '.', '_', '-', '/')")(value)


def _image(value: str) -> str:
    ref = ImageRef.parse(value)  # InvalidReference is a ValueError: it names the problem
    if ref.tag is not None and ref.digest is None:
        raise ValueError(
            f"{value!r} names a tag, and a tag moves: give the repository (the pipeline supplies "
            "the digest) or pin it (repository@sha256:...)"
        )
    return value


EnvName = Annotated[
    str,
    AfterValidator(
        _pattern(_ENV_NAME, "a valid variable name (letters, digits and '_', not a digit first)")
    ),
]
DnsName = Annotated[
    str,
    AfterValidator(
        _pattern(_DNS_NAME, "a valid name (1-32 lower-case letters, digits or '-', no '-' at ends)")
    ),
]
NetworkName = Annotated[
    str, AfterValidator(_pattern(_NETWORK, "a valid network name (letters, digits, '_.-')"))
]
LabelKey = Annotated[str, AfterValidator(_label_key)]
ConnId = Annotated[
    str,
    AfterValidator(
        _pattern(re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,249}$"), "an Airflow connection id")
    ),
]
"""An Airflow connection's id (e.g. the ``docker_engine`` connection an environment runs on)."""


def _url_path(value: str) -> str:
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError("must be an absolute path without spaces, e.g. /health")
    return value


UrlPath = Annotated[str, AfterValidator(_url_path)]
"""The path of an HTTP request (a health check, a smoke test)."""
Port = Annotated[int, Field(ge=1, le=65535)]
Memory = Annotated[int, BeforeValidator(parse_memory)]
SecretResolver = Callable[["SecretRef"], str]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, validate_by_name=True, validate_by_alias=True
    )


class SecretRef(_Model):
    """A secret, by reference: the app knows it as ``name``; its value is read at run time
    from ``from`` (``source``) at ``ref``. ``key`` picks a part: for an Airflow connection one of
    password (the default), login, host, schema, port, uri or ``extra.<field>``; for a JSON
    Airflow variable or AWS secret, a top-level key. ``expose``: ``file`` (``/run/secrets/<name>``
    and ``<name>_FILE`` pointing at it; the default) or ``env`` (the variable ``<name>`` holds
    the value: visible in ``docker inspect``)."""

    name: EnvName
    source: SecretSource = Field(alias="from")
    ref: str
    key: str | None = None
    expose: Literal["file", "env"] = "file"

    @model_validator(mode="before")
    @classmethod
    def _no_literal(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            if any(k in data for k in ("value", "literal", "plain", "data", "secret")):
                raise ValueError(_LITERAL_SECRET)
        elif isinstance(data, (str, int, float, bool)):
            raise ValueError(_LITERAL_SECRET)
        return data

    @model_validator(mode="after")
    def _check_ref(self) -> SecretRef:
        checks: dict[str, tuple[re.Pattern[str], str]] = {
            "airflow_connection": (_AIRFLOW_ID, "an Airflow connection id"),
            "airflow_variable": (_AIRFLOW_ID, "an Airflow variable key"),
            "docker_secret": (_DOCKER_SECRET, "a Docker secret name"),
            "aws_secret_arn": (
                _ARN,
                "a Secrets Manager or SSM parameter ARN (arn:aws:secretsmanager:... or "
                "arn:aws:ssm:...:parameter/...)",
            ),
        }
        regex, what = checks[self.source]
        if not regex.match(self.ref):
            raise ValueError(f"ref: {self.ref!r} is not {what}")
        if self.source == "docker_secret" and (self.key is not None or self.expose != "file"):
            raise ValueError("key/expose: a Docker secret is mounted whole, as a file")
        if (
            self.source == "airflow_connection"
            and self.key is not None
            and self.key not in CONNECTION_KEYS
            and not self.key.startswith("extra.")
        ):
            raise ValueError(f"key: must be one of {', '.join(CONNECTION_KEYS)} or extra.<field>")
        return self

    def describe(self) -> str:
        """``airflow_connection:shop_db`` (``#key`` when a part is picked); never the value."""
        return f"{self.source}:{self.ref}" + (f"#{self.key}" if self.key else "")


class Resources(_Model):
    """Limits of each instance: ``cpus`` (0.5 = half a CPU), ``memory`` (``512m``, ``1g``)."""

    cpus: float | None = Field(default=None, gt=0, le=1024)
    memory: Memory | None = None

    def limits(self) -> Limits | None:
        if self.cpus is None and self.memory is None:
            return None
        return Limits(cpus=self.cpus, memory=self.memory)


class HealthCheckSpec(_Model):
    """The fields of :class:`docker_delivery.health.HealthCheck`; ``port`` defaults to the
    environment's ``port``."""

    path: UrlPath = "/health"
    port: Port | None = None
    expected_status: int = Field(default=200, ge=100, le=599)
    interval: float = Field(default=1.0, gt=0)
    timeout: float = Field(default=2.0, gt=0)
    healthy_threshold: int = Field(default=2, ge=1)
    unhealthy_threshold: int = Field(default=3, ge=1)
    start_period: float = Field(default=0.0, ge=0)
    scheme: Literal["http", "https"] = "http"
    start_interval: float | None = Field(default=None, gt=0)

    def to_check(self, port: int) -> HealthCheck:
        data = self.model_dump()
        data["port"] = self.port or port
        return HealthCheck(**data)


class RouterSpec(_Model):
    """The service's HAProxy router in this environment (:class:`RouterSettings`): ``port`` is
    the port users reach on the engine's host, published on ``address`` (every interface by
    default; an address of the engine's host to publish on that one only); ``public_url`` and
    ``preview_url`` say where users reach it when that is not the engine's host."""

    port: Port
    preview_port: Port | None = None
    image: str = "haproxy:lts"
    slots: int = Field(default=16, ge=1, le=256)
    check_interval_ms: int = Field(default=1000, ge=100)
    address: str = "0.0.0.0"
    public_url: str | None = None
    preview_url: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP address of the engine's host (0.0.0.0: every interface)"
            ) from None

    @field_validator("public_url", "preview_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(f"{value!r} is not an http(s) URL (http://shop.example.com/)")
        return value

    @model_validator(mode="after")
    def _ports(self) -> RouterSpec:
        if self.preview_port is not None and self.preview_port == self.port:
            raise ValueError("preview_port: must differ from port")
        if self.preview_url is not None and self.preview_port is None:
            raise ValueError("preview_url: needs a preview_port")
        return self

    def settings(self) -> RouterSettings:
        assert self.port is not None
        return RouterSettings(
            port=self.port,
            preview_port=self.preview_port,
            image=self.image,
            slots=self.slots,
            check_interval_ms=self.check_interval_ms,
            address=self.address,
            public_url=self.public_url,
            preview_url=self.preview_url,
        )


class RouterDefaults(RouterSpec):
    port: Port | None = None  # type: ignore[assignment]  # each environment has its own


def _all_at_once() -> list[int | str]:
    return ["100%"]


class RolloutSpec(_Model):
    """How an infrastructure change rolls: on the engine, ``min_in_service`` instances keep
    serving (default: half, at least one when there are two or more); on Swarm, the ``stages``
    of the rolling deployment (``[1, "50%", "100%"]``)."""

    min_in_service: int | None = Field(default=None, ge=0)
    stages: list[int | str] = Field(default_factory=_all_at_once)
    drain_timeout: float = Field(default=120.0, gt=0)

    @field_validator("stages", mode="before")
    @classmethod
    def _stages(cls, value: Any) -> Any:
        if isinstance(value, list):
            for item in value:
                ok_int = isinstance(item, int) and not isinstance(item, bool)
                if not ok_int and not (isinstance(item, str) and item.endswith("%")):
                    raise ValueError(f"{item!r} is neither a count nor a percentage ('50%')")
        return value


class EnvironmentSpec(_Model):
    """How a service runs in one environment (the defaults with the environment's overrides)."""

    target: Literal["engine", "swarm", "ecs"] = "engine"
    engine: ConnId | None = None
    aws: AwsSpec | None = None  # target ecs: the cluster, its network, alarms, the router
    replicas: int = Field(default=1, ge=0)
    port: Port = 8080
    command: list[str] | None = None
    env: dict[EnvName, str] = Field(default_factory=dict)
    not_secrets: list[EnvName] = Field(default_factory=list)
    secrets: list[SecretRef] = Field(default_factory=list)
    networks: list[NetworkName] = Field(default_factory=list)
    resources: Resources | None = None
    health_check: HealthCheckSpec = Field(default_factory=HealthCheckSpec)
    labels: dict[LabelKey, str] = Field(default_factory=dict)
    router: RouterSpec
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    stop_grace: float = Field(default=30.0, ge=0)

    @field_validator("engine", mode="before")
    @classmethod
    def _no_engine(cls, value: Any) -> Any:
        """An empty engine (as ``${NAME:-}`` gives when NAME is unset) is the local default."""
        return None if value == "" else value

    @model_validator(mode="before")
    @classmethod
    def _ecs_needs_no_haproxy(cls, data: Any) -> Any:
        """On ECS the router is the ``aws`` section's; the HAProxy one is not used."""
        if isinstance(data, Mapping) and data.get("target") == "ecs" and not data.get("router"):
            data = {**data, "router": {"port": data.get("port", 8080)}}
        return data

    @field_validator("secrets", mode="before")
    @classmethod
    def _secrets_list(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            if any(isinstance(v, (str, int, float, bool)) for v in value.values()):
                raise ValueError(_LITERAL_SECRET)
            raise ValueError("must be a list of {name, from, ref}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EnvironmentSpec:
        problems = self.problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def problems(self) -> list[str]:
        """What is wrong across fields, one ``path: message`` line each."""
        out: list[str] = []
        names = [s.name for s in self.secrets]
        for i, secret in enumerate(self.secrets):
            at = f"secrets[{secret.name}]"
            if names.index(secret.name) != i:
                out.append(f"{at}: declared twice")
            if secret.name in self.env:
                out.append(f"{at}: {secret.name} is also in env; a name is a variable or a secret")
            if secret.expose == "file" and f"{secret.name}_FILE" in self.env:
                out.append(f"{at}: env sets {secret.name}_FILE, which points at the secret's file")
            if secret.source == "docker_secret" and self.target != "swarm":
                out.append(f"{at}.from: a docker_secret needs target swarm (this is {self.target})")
            if self.target == "ecs" and secret.source != "aws_secret_arn":
                out.append(
                    f"{at}.from: on ECS a secret is a Secrets Manager or SSM parameter ARN "
                    "(aws_secret_arn), "
                    "which ECS injects at run time; its value never passes through Airflow"
                )
        if self.target == "ecs" and self.aws is None:
            out.append("aws: target ecs needs the aws section (cluster, network, router)")
        if self.target != "ecs" and self.aws is not None:
            out.append(f"aws: only for target ecs (this is {self.target})")
        for name, value in self.env.items():
            if value and looks_secret(name) and name not in self.not_secrets:
                out.append(
                    f"env.{name}: the name says secret and it holds a literal value: move it to "
                    f"secrets as a reference ({{name: {name}, from: ..., ref: ...}}), or list it "
                    "in not_secrets if it is not a secret"
                )
        for name, value in self.labels.items():
            if value and looks_secret(name) and name not in self.not_secrets:
                out.append(
                    f"labels[{clip(name, 60)}]: the name says secret and a label is visible to "
                    "anyone who may inspect a container: keep secrets in secrets, or list it in "
                    "not_secrets if it is not a secret"
                )
        if len(set(self.networks)) != len(self.networks):
            out.append("networks: a network is listed twice")
        if self.health_check.port is not None and self.health_check.port != self.port:
            out.append(
                f"health_check.port: {self.health_check.port} is not the app's port {self.port}; "
                "the check probes the instances on their port"
            )
        try:
            self.health_check.to_check(self.port)
        except HealthCheckInvalid as exc:
            out.append(f"health_check: {exc}")
        mis = self.rollout.min_in_service
        if mis is not None and self.replicas and mis >= self.replicas:
            out.append(
                f"rollout.min_in_service: {mis} must be below replicas ({self.replicas}), or no "
                "instance could ever be replaced"
            )
        if self.target == "swarm" and self.replicas:
            from docker_delivery.strategies.rolling import resolve_stages

            try:
                resolve_stages(self.rollout.stages, self.replicas)
            except DeliveryError as exc:
                out.append(f"rollout.stages: {exc}")
        if self.target != "ecs" and self.replicas > self.router.slots:
            out.append(
                f"router.slots: {self.router.slots} slots cannot hold {self.replicas} replicas "
                f"(one instance per slot); give router.slots >= {self.replicas} or fewer replicas"
            )
        return out

    def health(self) -> HealthCheck:
        return self.health_check.to_check(self.port)

    def deploy_defaults(self) -> dict[str, Any]:
        """What this environment says for the deployment settings a deploy section leaves
        unset (:meth:`docker_delivery.strategies.settings.DeploySettings.defaulted`)."""
        return {
            "replicas": self.replicas,
            "min_in_service": self.rollout.min_in_service,
            "stages": tuple(self.rollout.stages),
            "drain_timeout": self.rollout.drain_timeout,
            "stop_grace": self.stop_grace,
        }


class EnvironmentDefaults(EnvironmentSpec):
    """What environments share; the same fields, none required (each environment must end up
    with a router port). Checks across fields run on each environment, not here."""

    router: RouterDefaults | None = None  # type: ignore[assignment]
    aws: dict[str, Any] | None = None  # type: ignore[assignment]  # checked per environment

    def problems(self) -> list[str]:
        return []


def _merge(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in overrides.items():
        base = merged.get(key)
        if key == "secrets" and isinstance(base, list) and isinstance(value, list):
            by_name = {_name_of(s): s for s in base}
            extra = [s for s in value if _name_of(s) is None]
            by_name.update({_name_of(s): s for s in value if _name_of(s) is not None})
            merged[key] = [s for n, s in by_name.items() if n is not None] + extra
        elif isinstance(base, Mapping) and isinstance(value, Mapping):
            merged[key] = {**base, **value}
        else:
            merged[key] = value
    return merged


def _name_of(item: Any) -> str | None:
    name = item.get("name") if isinstance(item, Mapping) else None
    return name if isinstance(name, str) else None


def _raw(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_unset=True)
    return {} if value is None else value


def _merged_view(data: Any) -> Any:
    """``data`` with every environment's overrides merged onto the defaults."""
    if not isinstance(data, Mapping):
        return data
    defaults, envs = _raw(data.get("defaults")), data.get("environments")
    if not isinstance(defaults, Mapping) or not isinstance(envs, Mapping):
        return data
    merged = {}
    for name, overrides in envs.items():
        raw = _raw(overrides)
        merged[name] = _merge(defaults, raw) if isinstance(raw, Mapping) else raw
    return {**data, "environments": merged}


class ServiceSpec(_Model):
    """A service's environments. ``environments[name]`` is the merged, validated spec of that
    environment (defaults + its overrides); ``image`` is the repository the pipeline builds
    (or a digest-pinned reference), never a tag."""

    service: DnsName
    image: Annotated[str, AfterValidator(_image)] | None = None
    defaults: EnvironmentDefaults = Field(default_factory=EnvironmentDefaults)
    environments: dict[DnsName, EnvironmentSpec] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        return _merged_view(data)

    # -- lookups -----------------------------------------------------------------------------

    def environment(self, name: str) -> EnvironmentSpec:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise SpecInvalid(
                f"service {self.service}",
                [f"environments.{name}: no such environment (the spec has {known})"],
            ) from None

    def router_for(self, environment: str) -> RouterSettings:
        return self.environment(environment).router.settings()

    def health_check_for(self, environment: str) -> HealthCheck:
        return self.environment(environment).health()

    def secret_mounts(
        self, environment: str, resolve_secret: SecretResolver | None
    ) -> tuple[SecretMount, ...]:
        """The environment's secrets with their values, read through ``resolve_secret``
        (Docker secrets are referenced by name and need no resolver)."""
        mounts = []
        for ref in self.environment(environment).secrets:
            if ref.source == "docker_secret":
                mounts.append(SecretMount.docker(ref.name, ref.ref))
                continue
            if resolve_secret is None:
                raise DeliveryError(
                    f"environments.{environment}.secrets[{ref.name}]: {ref.describe()} must be "
                    "resolved; pass resolve_secret"
                )
            value = resolve_secret(ref)
            if not isinstance(value, str):
                raise DeliveryError(
                    f"environments.{environment}.secrets[{ref.name}]: {ref.describe()} did not "
                    f"resolve to a string (got {type(value).__name__})"
                )
            mounts.append(
                SecretMount.of(
                    ref.name,
                    value,
                    service=self.service,
                    environment=environment,
                    expose=ref.expose,
                )
            )
        return tuple(mounts)

    def release_for(
        self,
        environment: str,
        image: str | ImageRef | None = None,
        *,
        resolve_secret: SecretResolver | None = None,
        secrets: Sequence[SecretMount] | None = None,
    ) -> Release:
        """The release of ``image`` (digest-pinned; default: the spec's ``image``) in
        ``environment``, with its variables, secrets (``secrets`` as resolved already, or
        resolved now through ``resolve_secret``), limits, networks and labels."""
        env = self.environment(environment)
        ref = image if image is not None else self.image
        if ref is None:
            raise SpecInvalid(
                f"service {self.service}", ["image: none given; pass the digest-pinned image"]
            )
        mounts = (
            tuple(secrets)
            if secrets is not None
            else self.secret_mounts(environment, resolve_secret)
        )
        return Release.of(
            self.service,
            environment,
            ref,
            port=env.port,
            env=dict(env.env),
            labels=dict(env.labels),
            command=tuple(env.command) if env.command else None,
            stop_grace=env.stop_grace,
            secrets=mounts,
            limits=env.resources.limits() if env.resources else None,
            networks=tuple(env.networks),
        )


# -- loading ---------------------------------------------------------------------------------


def load_spec(source: str | Path | Mapping[str, Any] | ServiceSpec) -> ServiceSpec:
    """A :class:`ServiceSpec` from a YAML file (a Path, or a string ending in .yaml/.yml), YAML
    text, or a mapping; a ServiceSpec is returned as is. Raises :class:`SpecInvalid` listing
    every problem with its field path (or its line and column in the YAML)."""
    if isinstance(source, ServiceSpec):
        return source
    if isinstance(source, Mapping):
        data: Any = source
        origin = "spec"
    else:
        text, origin, _ = read_source(source)
        data = load_yaml(text, origin)
    if not isinstance(data, Mapping):
        raise SpecInvalid(origin, ["the spec must be a mapping: service, defaults, environments"])
    problems: list[str] = []
    try:
        return ServiceSpec.model_validate(data)
    except ValidationError as exc:
        problems = describe_errors(exc, _merged_view(data), ServiceSpec)
    raise SpecInvalid(origin, problems)  # outside the except: the pydantic error (and the input
    # values it holds) is not chained to it
