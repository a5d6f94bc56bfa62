"""Answering a held rollout from the command line, as the Airflow UI's button does:

    docker-delivery continue SERVICE ENV   the rollout goes on (its hold task answers Continue)
    docker-delivery abort SERVICE ENV      the release under way leaves (Abort)

A pipeline holds a rollout as a human-in-the-loop task (HoldRolloutOperator) that waits without
a worker slot. These commands find the one waiting for SERVICE in ENV through Airflow's REST API
(``/api/v2``: its hitlDetails not yet answered) and answer it there, as the user whose login they
use: the answer, who gave it and when are what the UI would record. Nothing here imports
Airflow; the API server is ``--airflow-url`` (or DOCKER_DELIVERY_AIRFLOW_URL), the login a user
(``--user`` or DOCKER_DELIVERY_AIRFLOW_USER) whose password is read from the environment
variable DOCKER_DELIVERY_AIRFLOW_PASSWORD, never from the command line, or a token
(DOCKER_DELIVERY_AIRFLOW_TOKEN).
"""

from __future__ import annotations

import argparse
import os
from typing import Any, TextIO

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("continue", "abort")
CHOICES = {"continue": "Continue", "abort": "Abort"}
SETTLE = 10.0  # seconds a hold has waited before it is answered (see _settled)
URL, USER, PASSWORD, TOKEN = (
    f"DOCKER_DELIVERY_AIRFLOW_{name}" for name in ("URL", "USER", "PASSWORD", "TOKEN")
)


def add_parsers(sub: Any) -> None:
    for command, what in (
        ("continue", "carry a held rollout on (answers its hold task: Continue)"),
        ("abort", "abort a held rollout: the release under way leaves (answers Abort)"),
    ):
        p = sub.add_parser(
            command,
            help=what,
            description=f"{what[0].upper()}{what[1:]}. The hold task waiting for SERVICE in "
            "ENV is found and answered through Airflow's REST API, as the UI does. The login: "
            f"--user with the password in {PASSWORD}, or a token in {TOKEN}.",
        )
        p.add_argument("service")
        p.add_argument("environment")
        p.add_argument(
            "--airflow-url",
            default=os.environ.get(URL),
            help=f"the Airflow API server (default {URL})",
        )
        p.add_argument(
            "--user", default=os.environ.get(USER), help=f"the Airflow user (default {USER})"
        )
        p.add_argument("--dag-id", help="only a hold of this DAG")
        p.add_argument("--run-id", help="only a hold of this DAG run")


def run(args: argparse.Namespace, out: TextIO) -> int:
    import httpx

    from docker_delivery.cli import UsageError

    if not args.airflow_url:
        raise UsageError(f"give --airflow-url (or set {URL}): the Airflow API server")
    base = args.airflow_url.rstrip("/")
    with httpx.Client(base_url=f"{base}/api/v2", timeout=30) as api:
        api.headers["Authorization"] = f"Bearer {_token(base, args)}"
        held = _waiting(api, args)
        _settled(held, out)
        choice = CHOICES[args.command]
        hold = held["task_instance"]
        where = f"{hold['dag_id']} / {hold['dag_run_id']} / {hold['task_id']}"
        answer = api.patch(
            f"/dags/{hold['dag_id']}/dagRuns/{hold['dag_run_id']}/taskInstances/"
            f"{hold['task_id']}/{hold.get('map_index', -1)}/hitlDetails",
            json={"chosen_options": [choice], "params_input": {}},
        )
        _ok(answer, f"answering {where}")
        by = (answer.json().get("responded_by") or {}).get("name")
        print(f"{choice}: {held['subject']}\n  answered {where} as {by}", file=out)
    return 0


def _token(base: str, args: argparse.Namespace) -> str:
    import httpx

    from docker_delivery.cli import UsageError

    if token := os.environ.get(TOKEN):
        return token
    password = os.environ.get(PASSWORD)
    if not args.user or not password:
        raise UsageError(
            f"log in with --user (or {USER}) and the password in {PASSWORD}, or set {TOKEN}"
        )
    got = httpx.post(
        f"{base}/auth/token", json={"username": args.user, "password": password}, timeout=30
    )
    _ok(got, f"logging in to {base} as {args.user}")
    return str(got.json()["access_token"])


def _waiting(api: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The one hold of SERVICE in ENV that waits for an answer."""
    from docker_delivery.cli import UsageError
    from docker_delivery.strategies.abort import hold_subject

    subject = hold_subject(args.service, args.environment) + " "
    found = api.get(
        f"/dags/{args.dag_id or '~'}/dagRuns/{args.run_id or '~'}/hitlDetails",
        params={"response_received": False, "subject_search": subject.strip(), "limit": 100},
    )
    _ok(found, "listing the held rollouts")
    held = [h for h in found.json()["hitl_details"] if h["subject"].startswith(subject)]
    if not held:
        raise UsageError(
            f"no held rollout of {args.service} in {args.environment} waits for a decision"
        )
    if len(held) > 1:
        runs = ", ".join(
            f"{h['task_instance']['dag_id']}/{h['task_instance']['dag_run_id']}" for h in held
        )
        raise UsageError(f"{len(held)} held rollouts wait ({runs}): give --dag-id and --run-id")
    return dict(held[0])


def _settled(held: dict[str, Any], out: TextIO) -> None:
    """Wait until the hold has waited SETTLE seconds: Airflow 3.3 fails a task answered before
    the scheduler took in the end of the process that parked it (apache/airflow#67287)."""
    import datetime as dt
    import time

    try:
        since = dt.datetime.fromisoformat(str(held["created_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return
    left = SETTLE - (dt.datetime.now(dt.timezone.utc) - since).total_seconds()
    if left > 0:
        print(f"the hold asked {SETTLE - left:.0f}s ago: answering in {left:.0f}s", file=out)
        time.sleep(left)


def _ok(response: Any, doing: str) -> None:
    if response.status_code >= 300:
        raise RuntimeError(f"{doing}: HTTP {response.status_code}: {response.text[:300]}")
