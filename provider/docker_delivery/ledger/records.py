"""A deployment record: what was released, where, from which digest to which, and how it went.

One record is written per delivery attempt of one service to one environment (one deploy task of
one DAG run). The records are the audit trail and the input of the delivery metrics
(:mod:`docker_delivery.ledger.metrics`). A record holds only the fields below: never the values of
environment variables, never a secret.

Records validate themselves when built, so a bad one fails where it is made, not when the metrics
are read weeks later. Times are timezone-aware and normalised to UTC.

This is pure domain code: it must never import airflow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any, Final, Literal

from docker_delivery.ledger.errors import InvalidRecord

__all__ = [
    "APPROVALS",
    "DEPLOYMENT_TYPES",
    "OUTCOMES",
    "Approval",
    "DeploymentRecord",
    "DeploymentType",
    "Incident",
    "Outcome",
    "RecordKey",
]

DeploymentType = Literal["min_in_service", "rolling", "blue_green", "ab", "rollback", "redeploy"]
Outcome = Literal["success", "failed", "rolled_back", "rejected", "not_deployed"]
Approval = Literal["approved", "rejected"]
RecordKey = tuple[str, str, str, str]
"""``(dag_id, run_id, service, environment)``: one delivery attempt; a retry has the same key."""

DEPLOYMENT_TYPES: Final[tuple[DeploymentType, ...]] = (
    "min_in_service",
    "rolling",
    "blue_green",
    "ab",
    "rollback",
    "redeploy",
)
OUTCOMES: Final[tuple[Outcome, ...]] = (
    "success",
    "failed",
    "rolled_back",
    "rejected",
    "not_deployed",
)
"""``not_deployed``: the attempt changed nothing where it was to deploy (another delivery held
the service's lock): not a deployment, so not a failed one either."""
APPROVALS: Final[tuple[Approval, ...]] = ("approved", "rejected")
UNPLANNED_TYPES: Final[tuple[DeploymentType, ...]] = ("rollback", "redeploy")
"""Deployment types that are never planned: they undo a release because something went wrong."""
OPTIONAL_FIELDS: Final = ("detail", "planned", "incident", "release_id")
"""Fields a record's data may leave out (records written before they existed lack them)."""

DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")
"""A content digest as the ledger records it: ``sha256:`` and 64 lower-case hex characters."""

_TEXT_FIELDS: Final = ("service", "environment", "image", "dag_id", "run_id")
_TIME_FIELDS: Final = ("started_at", "finished_at", "committed_at")
_OPTIONAL_TEXT_FIELDS: Final = ("revision", "approved_by", "release_id")


@dataclass(frozen=True, kw_only=True)
class DeploymentRecord:
    """One delivery attempt of one service to one environment, and its outcome.

    ``image`` is the digest-pinned reference that was released (it must end with ``@<digest>``);
    ``previous_digest`` is what ran before (None on a first release). ``committed_at`` is the time
    of the commit that was built, when known: the start of the lead time. ``approval`` and
    ``approved_by`` record the approval gate, when there was one. ``detail`` is a short free text
    (an error message, a reason for the rollback); it must never carry a secret.
    """

    service: str
    environment: str
    digest: str
    previous_digest: str | None
    image: str
    deployment_type: DeploymentType
    outcome: Outcome
    started_at: datetime
    finished_at: datetime
    revision: str | None
    committed_at: datetime | None
    dag_id: str
    run_id: str
    approved_by: str | None
    approval: Approval | None
    detail: str = ""
    planned: bool | None = None
    """False for a deployment made because of an incident (DORA's rework): a rollback, or a run
    triggered for an incident or as a hotfix. None (not given): planned, unless a rollback or
    linked to an incident."""
    incident: str | None = None
    """The id of the incident this deployment was made for, when it was (a hotfix)."""
    release_id: str | None = None
    """The release this record belongs to, when several services were delivered as one: every
    record of the release has it (``docker-delivery history --release ID``)."""

    def __post_init__(self) -> None:
        if self.incident is not None and (
            not isinstance(self.incident, str) or not self.incident.strip()
        ):
            raise InvalidRecord(
                "incident", f"must be a non-empty string or None, got {self.incident!r}"
            )
        if self.planned is None:
            planned = self.deployment_type not in UNPLANNED_TYPES and self.incident is None
            object.__setattr__(self, "planned", planned)
        elif not isinstance(self.planned, bool):
            raise InvalidRecord("planned", f"must be true or false, got {self.planned!r}")
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidRecord(name, f"must be a non-empty string, got {value!r}")
        for name in _OPTIONAL_TEXT_FIELDS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidRecord(name, f"must be a non-empty string or None, got {value!r}")
        if not isinstance(self.detail, str):
            raise InvalidRecord("detail", f"must be a string, got {self.detail!r}")
        _check_digest("digest", self.digest)
        if self.previous_digest is not None:
            _check_digest("previous_digest", self.previous_digest)
        if not self.image.endswith("@" + self.digest):
            raise InvalidRecord(
                "image",
                f"{self.image!r} is not pinned to the released digest: "
                f"pass the reference ending with '@{self.digest}'",
            )
        if self.deployment_type not in DEPLOYMENT_TYPES:
            raise InvalidRecord(
                "deployment_type",
                f"unknown deployment type {self.deployment_type!r}: "
                f"use one of {', '.join(DEPLOYMENT_TYPES)}",
            )
        if self.outcome not in OUTCOMES:
            raise InvalidRecord(
                "outcome", f"unknown outcome {self.outcome!r}: use one of {', '.join(OUTCOMES)}"
            )
        if self.approval is not None and self.approval not in APPROVALS:
            raise InvalidRecord(
                "approval",
                f"unknown approval {self.approval!r}: use one of {', '.join(APPROVALS)} or None",
            )
        if self.approval == "rejected" and self.outcome != "rejected":
            raise InvalidRecord(
                "outcome",
                f"is {self.outcome!r} but the approval was rejected: "
                "a rejected delivery is recorded with outcome 'rejected'",
            )
        for name in _TIME_FIELDS:
            value = getattr(self, name)
            if value is None and name == "committed_at":
                continue
            # Frozen: normalising to UTC goes through object.__setattr__.
            object.__setattr__(self, name, _utc(name, value))
        if self.finished_at < self.started_at:
            raise InvalidRecord(
                "finished_at",
                f"{self.finished_at.isoformat()} is before started_at "
                f"{self.started_at.isoformat()}: pass the times of the same attempt",
            )

    @property
    def key(self) -> RecordKey:
        """``(dag_id, run_id, service, environment)``: a retried task writes the same key."""
        return (self.dag_id, self.run_id, self.service, self.environment)

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-able data: strings, None, and ISO-8601 UTC times."""
        return _as_data(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeploymentRecord:
        """Build a record from :meth:`to_dict` data, validating every field.

        Every field is required except those of :data:`OPTIONAL_FIELDS`; an unknown field is
        an error (a misspelt field would otherwise be dropped from the audit trail unseen).
        """
        if not isinstance(data, Mapping):
            raise InvalidRecord("record", f"must be a JSON object, got {type(data).__name__}")
        names = [field.name for field in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise InvalidRecord(unknown[0], f"unknown field; the fields are {', '.join(names)}")
        missing = [name for name in names if name not in data and name not in OPTIONAL_FIELDS]
        if missing:
            raise InvalidRecord(
                missing[0], f"missing: every field but {', '.join(OPTIONAL_FIELDS)} is required"
            )
        values = dict(data)
        for name in _TIME_FIELDS:
            values[name] = _parse_time(name, values[name])
        return cls(**values)


def _as_data(item: Any) -> dict[str, Any]:
    """A dataclass's fields as JSON-able data: times as ISO-8601 text."""
    data: dict[str, Any] = {}
    for field in fields(item):
        value = getattr(item, field.name)
        data[field.name] = value.isoformat() if isinstance(value, datetime) else value
    return data


def _check_digest(name: str, value: object) -> None:
    if not isinstance(value, str) or not DIGEST.fullmatch(value):
        raise InvalidRecord(
            name, f"{value!r} is not a digest: expected 'sha256:' and 64 lower-case hex characters"
        )


def _utc(name: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidRecord(name, f"must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRecord(
            name,
            f"{value.isoformat()} is a naive datetime: pass a timezone-aware one "
            "(e.g. datetime.now(timezone.utc))",
        )
    return value.astimezone(timezone.utc)


def _parse_time(name: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRecord(name, f"must be an ISO-8601 string, got {value!r}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRecord(
            name, f"{value!r} is not an ISO-8601 time such as '2025-01-31T12:00:00+00:00'"
        ) from None


@dataclass(frozen=True, kw_only=True)
class Incident:
    """An incident in one service and environment, from ``started_at`` until ``ended_at``
    (None while it lasts). Recorded by hand (the CLI, :meth:`Ledger.record_incident`), or read
    from the deployments: a failed or rolled-back deployment starts one (its ``id`` is then
    ``<dag_id>/<run_id>``), and the next successful deployment of the service and environment
    ends it. ``caused_by`` is the ``<dag_id>/<run_id>`` of the deployment that caused it, when
    known: that deployment then counts as a change failure even if it succeeded."""

    id: str
    service: str
    environment: str
    started_at: datetime
    ended_at: datetime | None = None
    title: str = ""
    caused_by: str | None = None

    def __post_init__(self) -> None:
        for name in ("id", "service", "environment"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidRecord(name, f"must be a non-empty string, got {value!r}")
        if self.caused_by is not None and not INCIDENT_CAUSE.fullmatch(str(self.caused_by)):
            raise InvalidRecord(
                "caused_by", f"{self.caused_by!r} is not a deployment's '<dag_id>/<run_id>'"
            )
        if not isinstance(self.title, str):
            raise InvalidRecord("title", f"must be a string, got {self.title!r}")
        object.__setattr__(self, "started_at", _utc("started_at", self.started_at))
        if self.ended_at is not None:
            object.__setattr__(self, "ended_at", _utc("ended_at", self.ended_at))
            if self.ended_at < self.started_at:
                raise InvalidRecord(
                    "ended_at",
                    f"{self.ended_at.isoformat()} is before started_at "
                    f"{self.started_at.isoformat()}",
                )

    def to_dict(self) -> dict[str, Any]:
        """The incident as JSON-able data (ISO-8601 UTC times)."""
        return _as_data(self)


INCIDENT_CAUSE: Final = re.compile(r"[^/\s]+/[^\s]+")
