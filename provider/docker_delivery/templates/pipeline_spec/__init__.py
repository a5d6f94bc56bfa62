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
the spec is loaded (``$$`` is a literal ``$``; the default stands for a name unset or empty, as
in a shell). :func:`load_pipeline` validates everything
before a DAG exists and raises :class:`~docker_delivery.spec.SpecInvalid`, whose ``problems``
are one ``field.path: message`` line each.

This module is domain code: it never imports Airflow."""

from __future__ import annotations

from docker_delivery.errors import SpecInvalid as SpecInvalid
from docker_delivery.templates.pipeline_spec.loading import load_pipeline as load_pipeline
from docker_delivery.templates.pipeline_spec.sections import DEFAULT_POLICIES as DEFAULT_POLICIES
from docker_delivery.templates.pipeline_spec.sections import DEPLOY_TARGETS as DEPLOY_TARGETS
from docker_delivery.templates.pipeline_spec.sections import ABDeploy as ABDeploy
from docker_delivery.templates.pipeline_spec.sections import ApprovalSpec as ApprovalSpec
from docker_delivery.templates.pipeline_spec.sections import AssetTrigger as AssetTrigger
from docker_delivery.templates.pipeline_spec.sections import BlueGreenDeploy as BlueGreenDeploy
from docker_delivery.templates.pipeline_spec.sections import BuildSpec as BuildSpec
from docker_delivery.templates.pipeline_spec.sections import DeploySpec as DeploySpec
from docker_delivery.templates.pipeline_spec.sections import DeployType as DeployType
from docker_delivery.templates.pipeline_spec.sections import HttpCheck as HttpCheck
from docker_delivery.templates.pipeline_spec.sections import MigrationsSpec as MigrationsSpec
from docker_delivery.templates.pipeline_spec.sections import (
    MinInServiceDeploy as MinInServiceDeploy,
)
from docker_delivery.templates.pipeline_spec.sections import PipelineSettings as PipelineSettings
from docker_delivery.templates.pipeline_spec.sections import PositiveSeconds as PositiveSeconds
from docker_delivery.templates.pipeline_spec.sections import RollingDeploy as RollingDeploy
from docker_delivery.templates.pipeline_spec.sections import Seconds as Seconds
from docker_delivery.templates.pipeline_spec.sections import SmokeTest as SmokeTest
from docker_delivery.templates.pipeline_spec.sections import StageSpec as StageSpec
from docker_delivery.templates.pipeline_spec.sections import TaskKind as TaskKind
from docker_delivery.templates.pipeline_spec.sections import TaskPolicy as TaskPolicy
from docker_delivery.templates.pipeline_spec.sections import TestSpec as TestSpec
from docker_delivery.templates.pipeline_spec.sections import TriggerSpec as TriggerSpec
from docker_delivery.templates.pipeline_spec.sections import VerifySpec as VerifySpec
from docker_delivery.templates.pipeline_spec.spec import PRESETS as PRESETS
from docker_delivery.templates.pipeline_spec.spec import PipelineSpec as PipelineSpec

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
