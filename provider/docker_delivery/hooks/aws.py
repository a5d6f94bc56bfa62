"""AWS clients for the domain: boto3 clients made by the amazon provider's hooks from an Airflow
``aws`` connection (credentials, region, ``endpoint_url``), with retries that back off on
throttling (botocore's ``standard`` mode, unless the connection's ``config_kwargs`` say
otherwise), and ECR logins from its authorization tokens (masked in task logs by the hook).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DEFAULT_AWS_CONN_ID = "aws_default"
RETRIES = {"mode": "standard", "max_attempts": 8}
"""Throttling (``ThrottlingException``, ``TooManyRequestsException``) and transient errors are
retried up to 8 attempts, with botocore's exponential backoff and jitter."""


def _config(aws_conn_id: str | None) -> Any:
    from airflow.sdk import BaseHook
    from botocore.config import Config

    if aws_conn_id is not None:
        try:
            if BaseHook.get_connection(aws_conn_id).extra_dejson.get("config_kwargs"):
                return None  # the connection's own botocore settings
        except Exception:  # no such connection: the hook's defaults, environment credentials
            pass
    return Config(retries=RETRIES)


def aws_client(service: str, aws_conn_id: str | None, region: str | None = None) -> Any:
    """A boto3 client of ``service`` through the amazon provider's AwsBaseHook."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(
        aws_conn_id=aws_conn_id,
        client_type=service,
        region_name=region,
        config=_config(aws_conn_id),
    )
    return hook.get_conn()


def ecr_login(aws_conn_id: str | None, region: str, account: str) -> Callable[[], tuple[str, str]]:
    """A source of the registry login for ``account``'s ECR registry: a new authorization token
    each call (they last 12 hours; the registry client asks again when one is refused)."""
    from airflow.providers.amazon.aws.hooks.ecr import EcrHook

    def login() -> tuple[str, str]:
        hook = EcrHook(  # type: ignore[no-untyped-call]
            aws_conn_id=aws_conn_id, region_name=region, config=_config(aws_conn_id)
        )
        credentials = hook.get_temporary_credentials(registry_ids=[account])[0]  # masked
        return credentials.username, credentials.password

    return login
