"""The specs: how a service runs in each environment (:mod:`.service`), read from YAML by one
loader that survives hostile input (:mod:`.loader`), with problems told in the words of the
person who wrote them (:mod:`.messages`). The pipeline spec
(:mod:`docker_delivery.templates.pipeline_spec`) is a service spec with a ``pipeline`` section,
read the same way.

This package is domain code: it never imports Airflow.
"""

from docker_delivery.errors import SpecInvalid
from docker_delivery.spec.messages import plain_message, unwrap_annotation
from docker_delivery.spec.service import (
    SECRET_SOURCES,
    EnvironmentDefaults,
    EnvironmentSpec,
    HealthCheckSpec,
    Resources,
    RolloutSpec,
    RouterSpec,
    SecretRef,
    SecretResolver,
    ServiceSpec,
    load_spec,
    looks_secret,
    parse_memory,
)

__all__ = [
    "SECRET_SOURCES",
    "EnvironmentDefaults",
    "EnvironmentSpec",
    "HealthCheckSpec",
    "Resources",
    "RolloutSpec",
    "RouterSpec",
    "SecretRef",
    "SecretResolver",
    "ServiceSpec",
    "SpecInvalid",
    "load_spec",
    "looks_secret",
    "parse_memory",
    "plain_message",
    "unwrap_annotation",
]
