"""A made-up delivery history for the ledger's view and benchmarks: ``count`` records of a few
services in three environments over ``days`` up to ``now``, the same for the same seed."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from docker_delivery.ledger import DeploymentRecord, Incident, Ledger

SERVICES = ("web", "api", "worker", "billing", "search", "auth")
ENVIRONMENTS = ("staging", "production", "qa")
APPROVERS = ("alice", "bob", "carol")


def history(
    count: int, *, now: datetime, days: float = 84, seed: int = 7
) -> list[DeploymentRecord]:
    """``count`` records, oldest first: mostly successes, some failures each followed by a
    rollback, the production ones approved; commit times an hour to two days before."""
    rng = random.Random(seed)
    step = days * 86400 / max(count, 1)
    digests: dict[tuple[str, str], str] = {}
    out = []
    for n in range(count):
        finished = now - timedelta(seconds=(count - n) * step)
        service, environment = SERVICES[n % len(SERVICES)], ENVIRONMENTS[(n // 7) % 3]
        digest = f"sha256:{rng.getrandbits(256):064x}"
        roll = rng.random()
        outcome: Any = "success" if roll < 0.86 else "failed" if roll < 0.93 else "rolled_back"
        kind: Any = rng.choice(("rolling", "blue_green", "min_in_service", "ab"))
        if outcome == "success" and rng.random() < 0.04:
            kind = "rollback"
        production = environment == "production"
        out.append(
            DeploymentRecord(
                service=service,
                environment=environment,
                digest=digest,
                previous_digest=digests.get((service, environment)),
                image=f"registry.example/{service}@{digest}",
                deployment_type=kind,
                outcome=outcome,
                started_at=finished - timedelta(minutes=rng.uniform(2, 20)),
                finished_at=finished,
                revision=f"{rng.getrandbits(40):010x}",
                committed_at=finished - timedelta(hours=rng.uniform(1, 48)),
                dag_id=f"deliver_{service}",
                run_id=f"scheduled__{finished:%Y-%m-%dT%H:%M:%S}_{n}",
                approved_by=rng.choice(APPROVERS) if production else None,
                approval="approved" if production else None,
            )
        )
        if outcome == "success":
            digests[(service, environment)] = digest
    return out


def seed(ledger: Ledger, count: int, *, now: datetime, days: float = 84) -> list[DeploymentRecord]:
    """Write :func:`history` and an incident recorded by hand into ``ledger``; returns the
    records."""
    records = history(count, now=now, days=days)
    ledger.record_many(records)
    ledger.record_incident(
        Incident(
            id="INC-1",
            service="web",
            environment="production",
            started_at=now - timedelta(days=3, hours=2),
            ended_at=now - timedelta(days=3),
            title="5xx after a configuration change",
        )
    )
    return records
