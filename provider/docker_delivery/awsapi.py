"""One call to an AWS API through a boto3 client, its failures as this package's errors.

Throttling and transient errors are retried by the client itself (its retry mode, set by the
hook that made it); what is left is raised as ``error`` with what was being done.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from typing import Any

from docker_delivery.errors import DeliveryError


def call(client: Any, operation: str, doing: str, error: type[DeliveryError], **params: Any) -> Any:
    """``client.<operation>(**params)``; a botocore failure raised as ``error("<doing>: ...")``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return getattr(client, operation)(**params)
    except (ClientError, BotoCoreError) as exc:
        raise error(f"{doing}: {exc}") from exc
