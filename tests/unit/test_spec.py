"""The environment spec: a good YAML loads and merges; broken ones are refused before anything
runs, with one message per problem naming its field path and environment."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from docker_delivery.errors import DeliveryError, InvalidReference
from docker_delivery.health import HealthCheck
from docker_delivery.spec import (
    HealthCheckSpec,
    SecretRef,
    ServiceSpec,
    SpecInvalid,
    load_spec,
    looks_secret,
    parse_memory,
)
from docker_delivery.targets import Release

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"127.0.0.1:5000/shop/web@{DIGEST}"

GOOD = """
service: web
image: 127.0.0.1:5000/shop/web
defaults:
  replicas: 2
  port: 8080
  env:
    LOG_LEVEL: info
    FEATURE_X: "1"
  secrets:
    - {name: DB_PASSWORD, from: airflow_connection, ref: shop_db}
  networks: [backend]
  resources: {cpus: 0.5, memory: 256m}
  health_check: {path: /health, interval: 0.5}
  labels: {team: payments}
  router: {image: haproxy:lts, slots: 8}
environments:
  staging:
    router: {port: 18080}
  prod:
    target: swarm
    replicas: 4
    env: {LOG_LEVEL: warn}
    secrets:
      - {name: DB_PASSWORD, from: docker_secret, ref: shop-db-password}
      - name: API_TOKEN
        from: aws_secret_arn
        ref: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-AbCdEf"
        key: token
        expose: env
    resources: {memory: 1g}
    router: {port: 8080, preview_port: 8081}
    rollout: {stages: [1, "50%", "100%"]}
"""


def spec_text(environment: str, body: str, defaults: str = "") -> str:
    """A spec with one environment (plus ``staging``) whose overrides are ``body``."""
    text = "service: web\n"
    if defaults:
        text += "defaults:\n" + textwrap.indent(textwrap.dedent(defaults).strip(), "  ") + "\n"
    text += "environments:\n  staging:\n    router: {port: 18080}\n"
    text += f"  {environment}:\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"
    return text


# -- a good spec -----------------------------------------------------------------------------


def test_a_good_spec_loads_and_environments_override_the_defaults() -> None:
    spec = load_spec(GOOD)
    staging, prod = spec.environment("staging"), spec.environment("prod")
    assert (staging.target, staging.replicas, prod.target, prod.replicas) == (
        "engine",
        2,
        "swarm",
        4,
    )
    assert staging.env == {"LOG_LEVEL": "info", "FEATURE_X": "1"}
    assert prod.env == {"LOG_LEVEL": "warn", "FEATURE_X": "1"}  # merged key by key
    assert [s.source for s in prod.secrets] == ["docker_secret", "aws_secret_arn"]  # by name
    assert prod.resources is not None and prod.resources.cpus == 0.5  # merged key by key
    assert prod.resources.memory == 1024**3
    assert staging.router.slots == prod.router.slots == 8
    assert spec.router_for("prod").port == 8080 and spec.router_for("staging").port == 18080
    assert spec.health_check_for("staging") == HealthCheck(path="/health", port=8080, interval=0.5)


def test_a_spec_loads_from_a_file_a_mapping_or_itself(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(GOOD)
    from_file = load_spec(path)
    assert load_spec(str(path)) == from_file
    assert load_spec(from_file) is from_file
    again = load_spec(from_file.model_dump(by_alias=True, exclude_unset=True))
    assert again.environments == from_file.environments


def test_release_for_carries_the_environment_and_resolved_secrets() -> None:
    spec = load_spec(GOOD)
    seen: list[str] = []

    def resolve(ref: SecretRef) -> str:
        seen.append(ref.describe())
        return "s3cret-value"

    release = spec.release_for("staging", IMAGE, resolve_secret=resolve)
    assert isinstance(release, Release) and release.digest == DIGEST
    assert release.env == {"LOG_LEVEL": "info", "FEATURE_X": "1"}
    assert release.networks == ("backend",) and release.labels == {"team": "payments"}
    assert release.limits is not None and release.limits.memory == 256 * 1024**2
    (secret,) = release.secrets
    assert seen == ["airflow_connection:shop_db"] and secret.value == "s3cret-value"
    assert release.start_env()["DB_PASSWORD_FILE"] == "/run/secrets/DB_PASSWORD"
    # The value is never in a label, the config id's input, or a repr.
    assert "s3cret-value" not in repr(release) + repr(secret) + str(release.run_labels())
    other = spec.release_for("staging", IMAGE, resolve_secret=lambda ref: "another")
    assert other.config_id != release.config_id  # a new value is a new configuration
    same = spec.release_for("staging", IMAGE, resolve_secret=resolve)
    assert same.config_id == release.config_id  # and a retry finds the same one


def test_release_for_needs_a_pinned_image_and_a_resolver() -> None:
    spec = load_spec(GOOD)
    with pytest.raises(SpecInvalid, match="image: none given"):
        spec.model_copy(update={"image": None}).release_for("staging")
    with pytest.raises(InvalidReference, match="not pinned"):
        spec.release_for("staging", resolve_secret=lambda ref: "x")  # the repository only
    with pytest.raises(DeliveryError, match=r"environments.staging.secrets\[DB_PASSWORD\]"):
        spec.release_for("staging", IMAGE)
    with pytest.raises(SpecInvalid, match=r"environments.qa: no such environment"):
        spec.environment("qa")


def test_the_health_check_spec_has_the_fields_of_health_check() -> None:
    assert set(HealthCheckSpec.model_fields) == {f.name for f in dataclasses.fields(HealthCheck)}


def test_secret_names_and_memory_sizes() -> None:
    assert [looks_secret(n) for n in ("DB_PASSWORD", "apiToken", "AWS_SECRET_ACCESS_KEY")] == [
        True
    ] * 3
    assert not any(looks_secret(n) for n in ("PASSWORD_FILE", "TOKEN_URL", "KEY_PREFIX", "PWD"))
    assert parse_memory("512m") == parse_memory("512Mi") == 512 * 1024**2
    assert parse_memory("1.5g") == int(1.5 * 1024**3)


def test_a_name_that_is_not_a_secret_can_say_so() -> None:
    spec = load_spec(
        spec_text("prod", "router: {port: 1}\nenv: {CACHE_KEY: v1}\nnot_secrets: [CACHE_KEY]")
    )
    assert spec.environment("prod").env == {"CACHE_KEY": "v1"}


# -- broken specs ------------------------------------------------------------------------------

BROKEN = [
    # (overrides of environment "prod", the problem line expected, or a regex)
    (
        "router: {port: 1}\nreplica: 2",
        "environments.prod.replica: unknown key (did you mean 'replicas'?)",
    ),
    ("router: {port: 1}\nreplicas: -1", "environments.prod.replicas: must be >= 0"),
    ("router: {port: 1}\nreplicas: '3'", "environments.prod.replicas: must be an integer"),
    (
        "router: {port: 1}\nenv: {bad-name: x}",
        "environments.prod.env.bad-name: 'bad-name' is not a valid variable name",
    ),
    (
        "router: {port: 1}\nenv: {1ST: x}",
        "environments.prod.env['1ST']: '1ST' is not a valid variable name",
    ),
    ("router: {port: 1}\nenv: {DEBUG: true}", "environments.prod.env.DEBUG: must be a string"),
    ("router: {port: 1}\nenv: {COUNTRY: NO}", "environments.prod.env.COUNTRY: must be a string"),
    (
        "router: {port: 1}\nsecrets: [{name: DB_PASSWORD, value: hunter2-literal}]",
        "environments.prod.secrets[DB_PASSWORD]: a literal secret value is refused: reference it",
    ),
    (
        "router: {port: 1}\nsecrets: {DB_PASSWORD: hunter2-literal}",
        "environments.prod.secrets: a literal secret value is refused: reference it",
    ),
    (
        "router: {port: 1}\nenv: {DB_PASSWORD: hunter2-literal}",
        "environments.prod.env.DB_PASSWORD: the name says secret and it holds a literal value",
    ),
    (
        "router: {port: 1}\nsecrets: [{name: X, from: vault, ref: a}]",
        "environments.prod.secrets[X].from: must be one of 'airflow_connection', "
        "'airflow_variable', 'docker_secret' or 'aws_secret_arn'",
    ),
    (
        "router: {port: 1}\nsecrets: [{name: X, from: aws_secret_arn, ref: my-secret}]",
        "environments.prod.secrets[X].ref: 'my-secret' is not a Secrets Manager or SSM "
        "parameter ARN",
    ),
    (
        "router: {port: 1}\nsecrets: [{name: X, from: docker_secret, ref: x}]",
        "environments.prod.secrets[X].from: a docker_secret needs target swarm (this is engine)",
    ),
    (
        "router: {port: 1}\nenv: {X: a}\nsecrets: [{name: X, from: airflow_variable, ref: x}]",
        "environments.prod.secrets[X]: X is also in env",
    ),
    (
        "router: {port: 1}\nresources: {memory: 256 megs}",
        "environments.prod.resources.memory: '256 megs' is not a size",
    ),
    (
        "router: {port: 1}\nresources: {memory: 1m}",
        "environments.prod.resources.memory: must be at least 6m",
    ),
    ("router: {port: 1}\nresources: {cpus: 0}", "environments.prod.resources.cpus: must be > 0"),
    (
        "router: {port: 1}\nlabels: {io.docker-delivery.slot: '9'}",
        "environments.prod.labels['io.docker-delivery.slot']: 'io.docker-delivery.slot': the "
        "prefix 'io.docker-delivery.' is reserved",
    ),
    (
        "router: {port: 1}\ntarget: k8s",
        "environments.prod.target: must be one of 'engine', 'swarm' or 'ecs'",
    ),
    (
        "target: ecs",
        "environments.prod.aws: target ecs needs the aws section (cluster, network, router)",
    ),
    (
        "router: {port: 1}\nhealth_check: {path: health}",
        "environments.prod.health_check.path: must be an absolute path",
    ),
    (
        "router: {port: 1}\nhealth_check: {healthy_threshold: 0}",
        "environments.prod.health_check.healthy_threshold: must be >= 1",
    ),
    (
        "router: {port: 1}\nhealth_check: {port: 9090}",
        "environments.prod.health_check.port: 9090 is not the app's port 8080",
    ),
    (
        "router: {port: 1}\nhealth_check: {interval: 1, start_interval: 2}",
        "environments.prod.health_check: invalid health check: start_interval must be a "
        "positive number of seconds, at most interval (1.0)",
    ),
    (
        "router: {port: 1}\nhealth_check: {retries: 3}",
        "environments.prod.health_check.retries: unknown key; known: path, port",
    ),
    ("replicas: 2", "environments.prod.router: required"),
    ("router: {port: 70000}", "environments.prod.router.port: must be <= 65535"),
    (
        "router: {port: 1, preview_port: 1}",
        "environments.prod.router.preview_port: must differ from port",
    ),
    (
        "router: {port: 1}\nnetworks: ['bad net']",
        "environments.prod.networks[0]: 'bad net' is not a valid network name",
    ),
    (
        "router: {port: 1}\nreplicas: 2\nrollout: {min_in_service: 2}",
        "environments.prod.rollout.min_in_service: 2 must be below replicas (2)",
    ),
    (
        "router: {port: 1}\ntarget: swarm\nreplicas: 4\nrollout: {stages: [2, 1, '100%']}",
        "environments.prod.rollout.stages: stage targets must increase",
    ),
]


@pytest.mark.parametrize(("body", "expected"), BROKEN, ids=[e.split(":")[0] for _, e in BROKEN])
def test_a_broken_environment_is_refused_naming_the_field_and_environment(
    body: str, expected: str
) -> None:
    with pytest.raises(SpecInvalid) as caught:
        load_spec(spec_text("prod", body))
    assert len(caught.value.problems) == 1, caught.value.problems
    assert caught.value.problems[0].startswith(expected), caught.value.problems
    assert "hunter2" not in str(caught.value)  # a literal secret is never quoted back
    assert "Traceback" not in str(caught.value) and "pydantic" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "service: web\nimage: repo/web:latest\nenvironments:\n  prod:\n    router: {port: 1}\n",
            "image: 'repo/web:latest' names a tag, and a tag moves",
        ),
        (
            "service: web\nimage: 'repo/web@sha256:12'\n"
            "environments:\n  prod:\n    router: {port: 1}\n",
            "image: invalid image reference",
        ),
        (
            "service: Web\nenvironments:\n  prod:\n    router: {port: 1}\n",
            "service: 'Web' is not a valid name",
        ),
        (
            "service: web\nenvironments:\n  Prod:\n    router: {port: 1}\n",
            "environments.Prod: 'Prod' is not a valid name",
        ),
        ("service: web\nenvironments: {}\n", "environments: must not be empty"),
        (
            "service: web\nenviroments:\n  prod: {}\n",
            "enviroments: unknown key (did you mean 'environments'?)",
        ),
        (
            "service: web\nenvironments:\n  prod:\n    env: {A: x}\n    env: {B: y}\n",
            "YAML: line 5, column 5: the key 'env' is given twice",
        ),
        ("service: web\nenvironments:\n  prod: [\n", "YAML: line 4, column 1:"),
        ("- service\n- web\n", "the spec must be a mapping"),
    ],
)
def test_a_broken_service_spec_is_refused(text: str, expected: str) -> None:
    with pytest.raises(SpecInvalid) as caught:
        load_spec(text)
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_a_problem_in_the_defaults_is_reported_once_at_its_place() -> None:
    with pytest.raises(SpecInvalid) as caught:
        load_spec(spec_text("prod", "router: {port: 1}", defaults="replicas: -2\nenv: {a-b: x}"))
    assert caught.value.problems == [
        "defaults.replicas: must be >= 0",
        "defaults.env.a-b: 'a-b' is not a valid variable name (letters, digits and '_', "
        "not a digit first)",
    ]


def test_every_problem_is_listed_at_once() -> None:
    body = "router: {port: 1}\nreplicas: -1\ntarget: k8s\nenv: {x-y: z}\nfoo: 1"
    with pytest.raises(SpecInvalid) as caught:
        load_spec(spec_text("prod", body))
    assert len(caught.value.problems) == 4
    assert str(caught.value).startswith(
        "invalid spec (spec text), 4 problems:\n  - environments.prod."
    )


def test_a_missing_file_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(SpecInvalid, match="cannot read the file"):
        load_spec(tmp_path / "nope.yaml")


def test_models_compose_into_a_bigger_spec() -> None:
    """A later pipeline spec nests ServiceSpec; its errors keep their paths."""
    from pydantic import BaseModel, ValidationError

    class Pipeline(BaseModel):
        services: dict[str, ServiceSpec]

    data = {"services": {"web": load_spec(GOOD).model_dump(by_alias=True, exclude_unset=True)}}
    assert Pipeline.model_validate(data).services["web"].environment("prod").replicas == 4
    data["services"]["web"]["environments"]["prod"]["replicas"] = -1
    with pytest.raises(ValidationError) as caught:
        Pipeline.model_validate(data)
    assert caught.value.errors()[0]["loc"] == (
        "services",
        "web",
        "environments",
        "prod",
        "replicas",
    )
