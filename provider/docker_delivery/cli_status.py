"""``docker-delivery status SERVICE ENVIRONMENT [--watch]``: what runs, its digests, the router's
routes, weights and health, and the rollout's stage (docker_delivery.strategies.status).

The engine: ``--engine-conn-id`` (an Airflow ``docker_engine`` connection: TLS or SSH to a
remote engine or Swarm manager; Airflow is imported for it), else ``--docker-url``, else
DOCKER_HOST or the local socket. Nothing is changed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import Any, TextIO

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    s = sub.add_parser(
        "status",
        help="what runs, digests, router weights and health, the rollout's stage",
        description="Read a service in an environment: its instances and digests, the router's "
        "routes and slots (health, weight, sessions), Swarm update states, and the rollout's "
        "stage (stable, mixed, preview). Nothing is changed.",
    )
    s.add_argument("service")
    s.add_argument("environment")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--engine-conn-id", help="the docker_engine connection of the engine")
    g.add_argument("--docker-url", help="the engine's URL (default DOCKER_HOST or the socket)")
    s.add_argument("--port", type=int, default=8080, help="the app's port (default 8080)")
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    s.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=float,
        metavar="SECONDS",
        help="read again every SECONDS (default 2), print each change, until Ctrl-C",
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    from docker_delivery.cli import UsageError
    from docker_delivery.strategies.status import service_status

    if args.watch is not None and not args.watch > 0:
        raise UsageError(f"--watch takes a number of seconds above 0, got {args.watch:g}")
    client = _client(args)
    try:
        last = None
        while True:
            status = service_status(client, args.service, args.environment, port=args.port)
            text = json.dumps(status.as_dict(), sort_keys=True) if args.json else status.describe()
            if text != last:
                if args.watch is not None and not args.json:
                    print(f"-- {dt.datetime.now(dt.timezone.utc):%H:%M:%S} UTC", file=out)
                print(text, file=out, flush=True)
                last = text
            if args.watch is None:
                return 0
            time.sleep(args.watch)
    finally:
        client.close()


def _client(args: argparse.Namespace) -> Any:
    if args.engine_conn_id:
        from docker_delivery.hooks.engine import engine_client  # Airflow's connections

        return engine_client(engine_conn_id=args.engine_conn_id, timeout=30)
    import docker

    if args.docker_url:
        return docker.DockerClient(base_url=args.docker_url, timeout=30)
    return docker.from_env(timeout=30)
