"""DeliveriesPlugin: the Deliveries view in Airflow's UI.

What the API server mounts (the FastAPI app of :mod:`docker_delivery.plugins.app` under
``/docker-delivery``) and where the UI shows it: "Deliveries" in the Browse menu, and a
"Delivery" tab on each DAG run's page (that run's deliveries). Both are pages of the app, shown
by the UI in a frame of its own origin, so the browser's Airflow login (the ``_token`` cookie)
authorises them as it does Airflow's own pages.

Airflow loads it through the ``airflow.plugins`` entry point (and, when providers are
discovered eagerly, through the provider's info).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow.plugins_manager import AirflowPlugin

PREFIX = "/docker-delivery"
"""Where the API server mounts the app."""


def _base_path() -> str:
    """The path of Airflow's ``[api] base_url`` (``""`` at the root): the UI takes hrefs as
    they are, so a view's href starts with it."""
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def _app() -> Any:
    from docker_delivery.plugins.app import create_app

    return create_app()


class DeliveriesPlugin(AirflowPlugin):
    """The Deliveries view: what runs where, the history of deliveries, DORA's five metrics."""

    name = "docker_delivery"
    fastapi_apps = [  # noqa: RUF012  (AirflowPlugin declares them as class attributes)
        {"app": _app(), "url_prefix": PREFIX, "name": "Docker Delivery"}
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Deliveries",
            "href": f"{_base_path()}{PREFIX}/deliveries",
            "destination": "nav",
            "category": "browse",
            "url_route": "deliveries",
            "icon": f"{_base_path()}{PREFIX}/static/icon.svg",
        },
        {
            "name": "Delivery",
            "href": f"{_base_path()}{PREFIX}/deliveries?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "delivery",
            "icon": f"{_base_path()}{PREFIX}/static/icon.svg",
        },
    ]
