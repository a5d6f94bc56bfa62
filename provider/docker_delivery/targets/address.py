"""Where an engine is, as users reach the ports it publishes: the host in its URL.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from urllib.parse import urlsplit

LOCAL_HOST = "localhost"  # the host of an engine on a local socket, as users reach it


def engine_host(base_url: str | None) -> str:
    """The host an engine's published ports are reached at: the address in ``base_url``
    (``tcp://h:2376``, ``https://h:2376``, ``ssh://user@h``); ``localhost`` for a local socket
    (or no URL: the default engine)."""
    if not base_url or base_url.startswith(("unix:", "npipe:", "http+unix:")):
        return LOCAL_HOST
    host = urlsplit(base_url if "://" in base_url else f"tcp://{base_url}").hostname
    return host or LOCAL_HOST
