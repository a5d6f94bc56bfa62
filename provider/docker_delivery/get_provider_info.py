"""The ``apache_airflow_provider`` entry point: what Airflow's ProvidersManager lists for us."""

from __future__ import annotations

from typing import Any

from docker_delivery import __version__

_INTEGRATION = "Docker Delivery"

HAPROXY_FORM = {
    # Only host and port: the Runtime API takes no schema, credentials or options.
    "hidden-fields": ["schema", "login", "password", "extra"],
    "relabeling": {"host": "Runtime API host", "port": "Runtime API port"},
    "placeholders": {"host": "haproxy.internal", "port": "9999"},
}
"""The ``haproxy`` connection's form: read by Airflow from this info (3.2 and later) and by
HaproxyHook.get_ui_field_behaviour (earlier versions)."""


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-docker-delivery",
        "name": "Docker Delivery",
        "description": "Docker-native continuous delivery: build an image once, test it in the "
        "image, promote it by tag, and deploy it by digest (minimum in-service, rolling, "
        "blue/green, A/B) to Docker Engine, Docker Swarm and AWS ECS (ECR, ALB, Route 53); "
        "a deployment ledger with DORA's metrics and a Deliveries view in the UI.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://pypi.org/project/airflow-provider-docker-delivery/",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "docker_delivery.operators.build",
                    "docker_delivery.operators.test",
                    "docker_delivery.operators.promote",
                    "docker_delivery.operators.migrate",
                    "docker_delivery.operators.deploy",
                    "docker_delivery.operators.infra",
                ],
            }
        ],
        "hooks": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "docker_delivery.hooks.registry",
                    "docker_delivery.hooks.engine",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "docker_delivery.sensors.drift",
                    "docker_delivery.sensors.health",
                    "docker_delivery.sensors.rollout",
                ],
            }
        ],
        "triggers": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "docker_delivery.triggers.ab",
                    "docker_delivery.triggers.ecs_bake",
                    "docker_delivery.triggers.health",
                    "docker_delivery.triggers.post_switch",
                    "docker_delivery.triggers.rollout",
                ],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "docker_delivery.hooks.haproxy.HaproxyHook",
                "hook-name": "HAProxy Runtime API",
                "connection-type": "haproxy",
                "ui-field-behaviour": HAPROXY_FORM,
            },
            {
                "hook-class-name": "docker_delivery.hooks.engine.DockerEngineHook",
                "hook-name": "Docker Engine",
                "connection-type": "docker_engine",
                "conn-fields": {
                    "tls_ca": {
                        "label": "CA certificate (PEM)",
                        "description": "The CA that signed the engine's TLS certificate.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "tls_cert": {
                        "label": "Client certificate (PEM)",
                        "schema": {"type": ["string", "null"]},
                    },
                    "tls_key": {
                        "label": "Client key (PEM)",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "swarm_nodes": {
                        "label": "Swarm nodes' engines (JSON)",
                        "description": "For a Swarm manager: the docker_engine connection of each "
                        'other node, e.g. {"10.0.0.6": "swarm_node_2"}; rolling deployments '
                        "stop drained tasks through them.",
                        "schema": {"type": ["string", "null"]},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "password"],
                    "relabeling": {"host": "Engine (address, tcp://, ssh://user@host, unix://)"},
                    "placeholders": {"host": "10.0.0.5", "port": "2376", "login": "ssh user"},
                },
            },
        ],
        "extra-links": [
            "docker_delivery.operators.links.ServiceLink",
            "docker_delivery.operators.links.ImageLink",
            "docker_delivery.operators.links.DeliveryLink",
        ],
        "plugins": [
            {
                "name": "docker_delivery",
                "plugin-class": "docker_delivery.plugins.deliveries.DeliveriesPlugin",
            }
        ],
        "config": {
            "docker_delivery": {
                "description": "The Docker Delivery provider: where the deployment ledger is.",
                "options": {
                    "ledger_conn_id": {
                        "description": "The Airflow connection (postgres, mysql or sqlite) of "
                        "the ledger's database, for workers on several machines. Read by every "
                        "pipeline that names no ledger of its own, and by the Deliveries view.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "delivery_ledger",
                        "default": "",
                    },
                    "ledger": {
                        "description": "Without ledger_conn_id: a SQLAlchemy URL or the path "
                        "of a SQLite file. Empty: $AIRFLOW_HOME/docker-delivery/ledger.db.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/shared/docker-delivery/ledger.db",
                        "default": "",
                    },
                },
            }
        },
    }
