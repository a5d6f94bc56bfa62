"""DAG templates: ``from docker_delivery.templates import delivery_pipeline``.

:func:`delivery_pipeline` turns a pipeline spec (:mod:`.pipeline_spec`) into a DAG; the spec,
its loader and the task plan import no Airflow, so ``docker-delivery validate`` and ``plan``
stay fast. Names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docker_delivery.templates.pipeline import delivery_pipeline
    from docker_delivery.templates.pipeline_spec import PipelineSpec, SpecInvalid, load_pipeline
    from docker_delivery.templates.plan import describe_plan, plan_tasks

__all__ = [
    "PipelineSpec",
    "SpecInvalid",
    "delivery_pipeline",
    "describe_plan",
    "load_pipeline",
    "plan_tasks",
]

_WHERE = {
    "delivery_pipeline": "docker_delivery.templates.pipeline",
    "PipelineSpec": "docker_delivery.templates.pipeline_spec",
    "SpecInvalid": "docker_delivery.templates.pipeline_spec",
    "load_pipeline": "docker_delivery.templates.pipeline_spec",
    "describe_plan": "docker_delivery.templates.plan",
    "plan_tasks": "docker_delivery.templates.plan",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
