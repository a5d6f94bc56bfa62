"""The database a migration runs against, from an Airflow connection; its password and URL are
registered with Airflow's secrets masker at once."""

from __future__ import annotations

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from docker_delivery.migrations import Database


def database_from_connection(conn_id: str) -> Database:
    """The database of an Airflow connection, its URL and password registered with the masker."""
    conn = BaseHook.get_connection(conn_id)
    database = Database.from_connection(
        conn_id,
        conn_type=conn.conn_type,
        host=conn.host,
        port=conn.port,
        login=conn.login,
        password=conn.password,
        schema=conn.schema,
        extra=conn.extra_dejson,
    )
    for secret in database.secrets():  # the URL itself too, raw and encoded
        mask_secret(secret)
    return database
