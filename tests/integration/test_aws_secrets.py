"""Secrets by ARN, read when a task runs (Docker targets: the value goes into the container's
secret file; ECS injects them itself), against moto's server: a Secrets Manager secret (a key
of its JSON) and an SSM SecureString parameter, each masked in Airflow's logs once read."""

from __future__ import annotations

import json
import os

import pytest
from kit.moto import ACCOUNT, REGION, clients

from docker_delivery.spec import SecretRef

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_secrets_manager_and_ssm_parameters_are_read_by_arn_and_masked(moto: str) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    from docker_delivery.hooks.secrets import read_secret

    aws = clients(moto, "secretsmanager", "ssm")
    password, token = f"pw-{os.urandom(8).hex()}", f"tok-{os.urandom(8).hex()}"
    arn = aws["secretsmanager"].create_secret(
        Name=f"shop/db-{os.urandom(3).hex()}", SecretString=json.dumps({"password": password})
    )["ARN"]
    name = f"/shop/token-{os.urandom(3).hex()}"
    aws["ssm"].put_parameter(Name=name, Value=token, Type="SecureString")
    db = SecretRef.model_validate(
        {"name": "DB_PASSWORD", "from": "aws_secret_arn", "ref": arn, "key": "password"}
    )
    api = SecretRef.model_validate(
        {"name": "API_TOKEN", "from": "aws_secret_arn",
         "ref": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{name}"}
    )  # fmt: skip
    assert read_secret(db) == password and read_secret(api) == token
    assert redact(f"{password} {token}") == "*** ***"
