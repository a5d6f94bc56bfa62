"""Extra links on the delivery tasks' pages in Airflow's UI: the service where it answers, the
image in its registry, and the delivery in the Deliveries view.

Airflow 3 computes a task's links when the task ends, in the worker, and keeps each in XCom for
the UI; so a link is read from what the task returned (its XCom) or from its rendered fields,
and a task that has nothing to show (a deploy that failed before it knew its URL) shows none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

__all__ = ["DeliveryLink", "ImageLink", "ServiceLink"]


def _returned(ti_key: TaskInstanceKey) -> Any:
    from airflow.sdk.execution_time.xcom import XCom

    return XCom.get_value(ti_key=ti_key, key="return_value")


class ServiceLink(BaseOperatorLink):
    """Where the service answers after this step: the URL the deploy task returned."""

    name = "Service"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        out = _returned(ti_key)
        return str(out.get("url") or "") if isinstance(out, Mapping) else ""


class ImageLink(BaseOperatorLink):
    """The image this task built, promoted or deployed, in its registry (the digest-pinned
    reference: the task's ``image`` field, else what it returned)."""

    name = "Image"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from docker_delivery.images.links import image_url
        from docker_delivery.images.ref import ImageRef

        image = str(getattr(operator, "image", "") or "")
        if "@" not in image:
            out = _returned(ti_key)
            image = str(out.get("image") or "") if isinstance(out, Mapping) else str(out or "")
        try:
            return image_url(ImageRef.parse(image)) if image else ""
        except ValueError:
            return ""


class DeliveryLink(BaseOperatorLink):
    """This run's delivery in the Deliveries view (the provider's plugin in the API server)."""

    name = "Delivery"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk import conf

        base = conf.get("api", "base_url", fallback="") or ""
        query = urlencode({"dag_id": ti_key.dag_id, "run_id": ti_key.run_id})
        return f"{base.rstrip('/')}/docker-delivery/deliveries?{query}"
