"""Secrets by reference, read when a task runs: Airflow connections and variables, AWS Secrets
Manager secrets and SSM parameters (SecureString, decrypted). Each value is registered with
Airflow's secrets masker as soon as it is read, so it never reaches a task log; it is never
returned in XCom."""

from __future__ import annotations

import json
from typing import Any

from docker_delivery.spec import SecretRef


def read_secret(ref: SecretRef, *, aws_conn_id: str = "aws_default") -> str:
    """The value ``ref`` points at, masked in Airflow's logs from now on."""
    from airflow.sdk import Connection, Variable
    from airflow.sdk.log import mask_secret

    value: Any
    if ref.source == "airflow_connection":
        conn = Connection.get(ref.ref)
        key = ref.key or "password"
        if key.startswith("extra."):
            value = conn.extra_dejson.get(key.removeprefix("extra."))
        else:
            value = conn.get_uri() if key == "uri" else getattr(conn, key)
    elif ref.source == "airflow_variable":
        value = Variable.get(ref.ref, deserialize_json=ref.key is not None)
        value = value.get(ref.key) if ref.key is not None else value
    elif ref.source == "aws_secret_arn" and ":ssm:" in ref.ref:
        from airflow.providers.amazon.aws.hooks.ssm import SsmHook

        name = "/" + ref.ref.split(":parameter/", 1)[1].lstrip("/")
        value = SsmHook(aws_conn_id=aws_conn_id).get_parameter_value(name)  # decrypted
        value = json.loads(value).get(ref.key) if ref.key is not None else value
    elif ref.source == "aws_secret_arn":
        from airflow.providers.amazon.aws.hooks.secrets_manager import SecretsManagerHook as Hook

        value = Hook(aws_conn_id=aws_conn_id).get_secret(ref.ref)  # type: ignore[no-untyped-call]
        value = json.loads(value).get(ref.key) if ref.key is not None else value
    else:
        raise ValueError(f"{ref.describe()} is mounted by Docker, not read")
    if value is None or value == "":
        raise ValueError(f"secret {ref.name}: {ref.describe()} is empty")
    text = value.decode() if isinstance(value, bytes) else str(value)
    mask_secret(text, ref.name)
    return text
