"""Infrastructure changes: what differs between an environment's spec and what runs, made good
without changing the running digest.

:func:`plan` reads what runs (the labels, config, secret files, networks and limits of the
service's containers on the engine, or of its services on Swarm) and compares it with the
environment's spec (:mod:`docker_delivery.spec`): replicas, env variables, secrets (compared by
fingerprint, never shown), networks and resource limits. The :class:`InfraPlan` prints with
secret values masked (``***``) and has a masked :meth:`InfraPlan.as_dict` for XCom.

:func:`apply` makes that difference and nothing else. The digest is read from the running
instances and released again with the spec's configuration (``ServiceSpec.release_for``): every
change that needs new instances (env variables, secrets, networks, limits) rolls them through
the same strategies as a deploy, minimum in-service on the engine and the staged rolling
deployment on Swarm, drained at the router, so it drops no request; a change of replicas scales;
an instance whose own configuration label matches the spec but whose networks or limits were
changed by hand on the engine is corrected in place (``network connect/disconnect``,
``container.update``), without a restart. Nothing to do is a success that says so.

Why config changes roll instead of updating containers in place: an instance's configuration
(``io.docker-delivery.config``, also in its name) is a label, and labels cannot change on a
running container; updated in place, an instance would claim a configuration it no longer runs,
and the strategies, which trust that label, would later skip or needlessly replace it.

:func:`drift` compares two environments' live state with each other and with their specs.

Secrets reach containers as files, ``/run/secrets/<NAME>`` with ``<NAME>_FILE`` pointing at it:
on Swarm as Docker secrets (named after a fingerprint of the value, so a new value is a new
secret and a roll; unused ones are removed after it), on the engine copied into the container
(``put_archive``) before it starts; or as the variable ``<NAME>`` where the spec says
``expose: env``. Values never go into a label, the plan, its dict (XCom) or a log line; they are
compared by fingerprint (PBKDF2, see ``targets.base.secret_fingerprint``). Where a value stays
visible: inside the container (by design); on the engine, in the container's writable layer
(``docker cp``/``export``, root on the host under the overlay2 directory) until the container is
removed; with ``expose: env``, in ``docker inspect`` / ``docker service inspect`` (``Env``).
A file secret is not in ``docker inspect`` at all.

This module is domain code: it never imports Airflow."""

from docker_delivery.errors import InfraConflict
from docker_delivery.infra.apply import InfraResult, apply, apply_spec, strategy_for
from docker_delivery.infra.drift import Difference, DriftReport, drift
from docker_delivery.infra.live import LiveUnit, read_live
from docker_delivery.infra.plan import MASK, Change, InfraPlan, plan

__all__ = [
    "MASK",
    "Change",
    "Difference",
    "DriftReport",
    "InfraConflict",
    "InfraPlan",
    "InfraResult",
    "LiveUnit",
    "apply",
    "apply_spec",
    "drift",
    "plan",
    "read_live",
    "strategy_for",
]
