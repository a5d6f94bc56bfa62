"""Switch markers: a created, never started container per switch of a service's public traffic,
named ``dd-switch-<service>-<env>-<ms>`` and labelled with when, to which group, from which, and
the digests. The newest marker is the truth; a switch writes a new one, then removes the older.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import datetime as dt
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from docker_delivery.strategies.base import Log
from docker_delivery.targets.labels import (
    LABEL_DIGEST,
    LABEL_ENVIRONMENT,
    LABEL_LIVE_GROUP,
    LABEL_MANAGED,
    LABEL_PREVIOUS_DIGEST,
    LABEL_PREVIOUS_GROUP,
    LABEL_ROLE,
    LABEL_SERVICE,
    LABEL_SWITCHED_AT,
    LABEL_SWITCHED_AT_UTC,
    ROLE_SWITCH_MARKER,
)

if TYPE_CHECKING:
    import docker


@dataclass(frozen=True)
class SwitchRecord:
    """One switch of ``public``, read from its marker container."""

    name: str
    at: float  # seconds since the epoch
    live: str
    previous: str
    digest: str
    previous_digest: str

    @property
    def at_utc(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.at, dt.timezone.utc)


def _marker_filters(service: str, environment: str) -> dict[str, list[str]]:
    return {
        "label": [
            f"{LABEL_ROLE}={ROLE_SWITCH_MARKER}",
            f"{LABEL_SERVICE}={service}",
            f"{LABEL_ENVIRONMENT}={environment}",
        ]
    }


def switch_records(
    client: docker.DockerClient, service: str, environment: str
) -> list[SwitchRecord]:
    """Every switch marker of the service, newest first."""
    records = []
    for raw in client.api.containers(all=True, filters=_marker_filters(service, environment)):
        labels = raw.get("Labels") or {}
        try:
            at = float(labels.get(LABEL_SWITCHED_AT, ""))
        except ValueError:
            continue
        records.append(
            SwitchRecord(
                name=(raw.get("Names") or ["/?"])[0].lstrip("/"),
                at=at,
                live=labels.get(LABEL_LIVE_GROUP, ""),
                previous=labels.get(LABEL_PREVIOUS_GROUP, ""),
                digest=labels.get(LABEL_DIGEST, ""),
                previous_digest=labels.get(LABEL_PREVIOUS_DIGEST, ""),
            )
        )
    return sorted(records, key=lambda r: r.at, reverse=True)


def last_switch(client: docker.DockerClient, service: str, environment: str) -> SwitchRecord | None:
    records = switch_records(client, service, environment)
    return records[0] if records else None


def record_switch(
    client: docker.DockerClient,
    service: str,
    environment: str,
    *,
    image: str,
    live: str,
    previous: str,
    digest: str,
    previous_digest: str,
    log: Log = print,
) -> SwitchRecord:
    """Write a new switch marker (a created, never started container of ``image``), then remove
    the older ones: a run killed in between leaves two, and the newest wins."""
    import docker.errors

    at = time.time()
    name = f"dd-switch-{service}-{environment}-{int(at * 1000)}"
    client.containers.create(
        image,
        name=name,
        command=["true"],
        labels={
            LABEL_MANAGED: "true",
            LABEL_ROLE: ROLE_SWITCH_MARKER,
            LABEL_SERVICE: service,
            LABEL_ENVIRONMENT: environment,
            LABEL_SWITCHED_AT: f"{at:.3f}",
            LABEL_LIVE_GROUP: live,
            LABEL_PREVIOUS_GROUP: previous,
            LABEL_DIGEST: digest,
            LABEL_PREVIOUS_DIGEST: previous_digest,
            LABEL_SWITCHED_AT_UTC: dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
        },
    )
    for old in switch_records(client, service, environment):
        if old.name != name:
            with suppress(docker.errors.NotFound):
                client.containers.get(old.name).remove(force=True)
    log(f"switch marker {name}: public -> {live} (was {previous})")
    return SwitchRecord(name, at, live, previous, digest, previous_digest)
