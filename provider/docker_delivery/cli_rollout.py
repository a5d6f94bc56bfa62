"""Operating a rollout from the command line:

    docker-delivery status SERVICE ENV [--watch]   what runs, its digests, the router's routes,
                                                   weights and health, the rollout's stage
    docker-delivery rollback SERVICE ENV           back to the previous release (a switch back
                                                   where it is warm, a redeploy otherwise)
    docker-delivery rollback --release ID --spec RELEASE.yaml
                                                   every service of a release back to what ran
                                                   before it, the last first (or nothing)

The engine: ``--engine-conn-id`` (an Airflow ``docker_engine`` connection: TLS or SSH to a
remote engine or Swarm manager; Airflow is imported for it), else ``--docker-url``, else
DOCKER_HOST or the local socket. ``rollback`` runs the code of RollbackOperator, under the
same lock as every delivery of the service and environment, and records itself in the ledger.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import Any, TextIO

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("status", "rollback")


def _engine(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--engine-conn-id", help="the docker_engine connection of the engine")
    g.add_argument("--docker-url", help="the engine's URL (default DOCKER_HOST or the socket)")
    p.add_argument("--port", type=int, default=8080, help="the app's port (default 8080)")


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "status",
        help="what runs, digests, router weights and health, the rollout's stage",
        description="Read a service in an environment: its instances and digests, the router's "
        "routes and slots (health, weight, sessions), Swarm update states, and the rollout's "
        "stage (stable, mixed, preview). Nothing is changed.",
    )
    s.add_argument("service")
    s.add_argument("environment")
    _engine(s)
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    s.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=float,
        metavar="SECONDS",
        help="read again every SECONDS (default 2), print each change, until Ctrl-C",
    )

    r = sub.add_parser(
        "rollback",
        help="return a service to its previous release (RollbackOperator's code and lock)",
        description="A switch back where the previous release is still warm (blue/green, "
        "A/B), a redeploy of the previous digest in batches otherwise; what ran before is read "
        "from the running objects. Recorded in the ledger as an unplanned rollback.",
    )
    r.add_argument("service", nargs="?")
    r.add_argument("environment", nargs="?")
    r.add_argument(
        "--release", metavar="ID",
        help="a whole release (docker-delivery history --release), with --spec",
    )  # fmt: skip
    r.add_argument("--spec", metavar="RELEASE.yaml", help="the release file it was delivered from")
    _engine(r)
    r.add_argument("--health-path", default="/health", help="the app's health check path")
    r.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    r.add_argument(
        "--lock-wait", type=float, default=0.0, metavar="SECONDS",
        help="wait this long for another delivery's lock (default: fail at once)",
    )  # fmt: skip
    from docker_delivery.cli_ledger import add_ledger_options

    add_ledger_options(r)
    r.add_argument("--reason", default="", help="why, for the ledger (never a secret)")


def run(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "rollback":
        return _rollback(args, out)
    return _status(args, out)


def _status(args: argparse.Namespace, out: TextIO) -> int:
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


def _owner() -> str:
    import getpass
    import socket

    return f"cli:{getpass.getuser()}@{socket.gethostname()}"


def _rollback_release(args: argparse.Namespace, out: TextIO) -> int:
    from docker_delivery.cli import UsageError
    from docker_delivery.cli_ledger import ledger_of
    from docker_delivery.templates.release_spec import load_release
    from docker_delivery.templates.release_undo import undo_release

    if args.service or args.environment or not args.spec:
        raise UsageError("rollback --release ID takes --spec RELEASE.yaml, and no SERVICE ENV")
    started = dt.datetime.now(dt.timezone.utc)
    client_for = None
    if args.docker_url or args.engine_conn_id:  # every service on that engine
        client_for = lambda _conn: _client(args)  # noqa: E731
    steps = undo_release(
        load_release(args.spec), args.release, ledger_of(args),
        owner=_owner(), dag_id="docker-delivery-cli",
        run_id=f"rollback__{started:%Y-%m-%dT%H:%M:%S.%fZ}", lock_wait=args.lock_wait,
        dry_run=args.dry_run, client_for=client_for,
        log=lambda line: print(line, file=out, flush=True),
    )  # fmt: skip
    verb = "would go back" if args.dry_run else "went back"
    moved = [s["service"] for s in steps if s["action"] == "roll_back"]
    print(
        f"release {args.release}: {verb}: {', '.join(moved) or 'nothing to do'}"
        + (f"; recorded as release {args.release}.rollback" if moved and not args.dry_run else ""),
        file=out,
    )
    return 0


def _rollback(args: argparse.Namespace, out: TextIO) -> int:
    if args.release:
        return _rollback_release(args, out)
    if not (args.service and args.environment):
        from docker_delivery.cli import UsageError

        raise UsageError("rollback takes SERVICE ENV, or --release ID --spec RELEASE.yaml")

    from docker_delivery.health import HealthCheck
    from docker_delivery.routing.service import find_router
    from docker_delivery.strategies.rollback import roll_back
    from docker_delivery.strategies.state import list_running
    from docker_delivery.targets.engine import network_name

    client = _client(args)
    try:
        router = find_router(
            client, args.service, args.environment,
            network_name(args.service, args.environment), log=lambda _: None,
        )  # fmt: skip
        if router is None:
            from docker_delivery.cli import UsageError

            raise UsageError(
                f"{args.service}/{args.environment} has no router on this engine: nothing to "
                "roll back here (check the service, the environment and --engine-conn-id)"
            )
        started = dt.datetime.now(dt.timezone.utc)
        owner = _owner()
        result = roll_back(
            client, args.service, args.environment,
            router=router, check=HealthCheck(path=args.health_path, port=args.port),
            owner=owner, lock_wait=args.lock_wait, dry_run=args.dry_run,
            log=lambda line: print(line, file=out, flush=True),
        )  # fmt: skip
        serving = list_running(client, args.service, args.environment, args.port)
    finally:
        client.close()
    verb = "would roll back" if args.dry_run else "rolled back"
    print(
        f"{args.service}/{args.environment}: {verb} by {result.kind}, "
        f"{result.from_digest[7:19]} -> {result.to_digest[7:19]} ({result.duration_s:.1f}s)",
        file=out,
    )
    if args.dry_run:
        return 0
    image = next((r.image for r in serving if r.digest == result.to_digest and r.image), None)
    where = _record(args, result, image, started, owner)
    print(f"recorded in the ledger {where}", file=out)
    return 0


def _record(
    args: argparse.Namespace, result: Any, image: str | None, started: dt.datetime, owner: str
) -> str:
    """The rollback in the ledger: unplanned, by whom, from which digest to which."""
    from docker_delivery.cli_ledger import ledger_of
    from docker_delivery.ledger import DeploymentRecord

    ledger = ledger_of(args)
    ledger.record(
        DeploymentRecord(
            service=args.service, environment=args.environment,
            digest=result.to_digest, previous_digest=result.from_digest,
            image=image if image and image.endswith(result.to_digest) else
            f"{args.service}@{result.to_digest}",
            deployment_type="rollback", outcome="success",
            started_at=started, finished_at=dt.datetime.now(dt.timezone.utc),
            revision=None, committed_at=None,
            dag_id="docker-delivery-cli", run_id=f"rollback__{started:%Y-%m-%dT%H:%M:%S.%fZ}",
            approved_by=None, approval=None,
            detail=(f"by {owner}" + (f": {args.reason}" if args.reason else ""))[:500],
        )
    )  # fmt: skip
    return str(ledger.where)
