"""One delivery of a service and environment at a time on AWS: a lock in SSM Parameter Store.

The lock is the parameter ``/docker-delivery/locks/<cluster>/<service>-<environment>``, written
with ``Overwrite=False``: SSM refuses a second one (``ParameterAlreadyExists``), so taking it is
atomic, and it is visible (its value: the owner and since when). The owner is stable across
retries of one task (DAG, run, task), so a retry after a killed worker takes over its own lock
instead of waiting for itself. Another owner waits ``wait`` seconds, saying who holds it, then
gets :class:`~docker_delivery.errors.DeploymentLocked`: nothing changed.

This module is domain code: it never imports Airflow; the boto3 ``ssm`` client comes in.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from docker_delivery.awsapi import call
from docker_delivery.errors import DeploymentLocked, TargetError
from docker_delivery.strategies.aws_bake import BakeHandedOver

PREFIX = "/docker-delivery/locks"
WAIT_LOG_EVERY = 30.0


class AwsDeploymentLock:
    """``with AwsDeploymentLock(ssm, cluster, service, environment, owner=...):`` the delivery."""

    def __init__(
        self,
        ssm: Any,
        cluster: str,
        service: str,
        environment: str,
        *,
        owner: str,
        wait: float = 0.0,
        poll: float = 2.0,
        log: Callable[[str], None] = print,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ssm = ssm
        self.name = f"{PREFIX}/{cluster}/{service}-{environment}"
        self.what = f"{service} in {environment}"
        self.owner = owner
        self.wait = wait
        self.poll = poll
        self.log = log
        self.sleep = sleep
        self.clock = clock

    def holder(self) -> dict[str, str] | None:
        """Who holds the lock (``owner``, ``since``), None when nobody does."""
        from botocore.exceptions import ClientError

        try:
            value = self.ssm.get_parameter(Name=self.name)["Parameter"]["Value"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
                return None
            raise TargetError(f"reading the lock {self.name}: {exc}") from exc
        try:
            found = json.loads(value)
        except ValueError:
            return {"owner": value, "since": "?"}
        return found if isinstance(found, dict) else {"owner": str(found), "since": "?"}

    def _take(self) -> bool:
        from botocore.exceptions import ClientError

        since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        try:
            self.ssm.put_parameter(
                Name=self.name,
                Value=json.dumps({"owner": self.owner, "since": since}),
                Type="String",
                Overwrite=False,
                Description=f"docker-delivery: the delivery of {self.what} in progress",
            )
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ParameterAlreadyExists":
                return False
            raise TargetError(f"taking the lock {self.name}: {exc}") from exc

    def __enter__(self) -> AwsDeploymentLock:
        deadline = self.clock() + self.wait
        logged_at: float | None = None
        while not self._take():
            holder = self.holder()
            if holder is None:
                continue  # released meanwhile: take it now
            if holder.get("owner") == self.owner:
                self.log(f"the lock of {self.what} is this task's own (a retry): carrying on")
                return self
            now = self.clock()
            if now >= deadline:
                raise DeploymentLocked(
                    f"another delivery of {self.what} holds its lock {self.name} (owner "
                    f"{holder.get('owner')}, since {holder.get('since')}); nothing changed"
                )
            if logged_at is None or now - logged_at >= WAIT_LOG_EVERY:
                self.log(f"waiting for the lock of {self.what}, held by {holder.get('owner')}")
                logged_at = now
            self.sleep(self.poll)
        self.log(f"took the lock of {self.what} ({self.name})")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, BakeHandedOver):  # the delivery goes on elsewhere, as this owner
            self.log(f"the lock of {self.what} stays this task's while the bake runs elsewhere")
            return
        holder = self.holder()
        if holder is not None and holder.get("owner") == self.owner:
            call(self.ssm, "delete_parameter", f"freeing the lock {self.name}", TargetError,
                 Name=self.name)  # fmt: skip
