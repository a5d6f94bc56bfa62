"""The label schema: every label docker-delivery writes on the objects it runs, in one place.

The truth about what runs lives in these labels (see shared/DESIGN.md, "State and retries"): each
container, Swarm service, lock and marker carries the ``io.docker-delivery.`` labels below, and
every reader decodes them through :mod:`docker_delivery.targets.inventory`. Values are names,
digests, slots and times, never an environment variable's value or a secret.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

from typing import Final

LABEL_PREFIX: Final = "io.docker-delivery."

# -- every object of ours ---------------------------------------------------------------------
LABEL_MANAGED: Final = LABEL_PREFIX + "managed"  # "true"
LABEL_ROLE: Final = LABEL_PREFIX + "role"  # one of the ROLE_* below
LABEL_SERVICE: Final = LABEL_PREFIX + "service"
LABEL_ENVIRONMENT: Final = LABEL_PREFIX + "environment"

# -- an instance of a release (a container, or a Swarm service and its tasks) -----------------
LABEL_DIGEST: Final = LABEL_PREFIX + "digest"
LABEL_IMAGE: Final = LABEL_PREFIX + "image"  # the digest-pinned reference
LABEL_COLOUR: Final = LABEL_PREFIX + "colour"  # an ECS service's: blue, green, or an A/B variant
LABEL_SLOT: Final = LABEL_PREFIX + "slot"  # 1..N on the engine; a Swarm task's is its task slot
LABEL_CONFIG: Final = LABEL_PREFIX + "config"  # Release.config_id
LABEL_PORT: Final = LABEL_PREFIX + "port"  # the app's port in the instance
# Written by blue/green, A/B, rollback (and min in-service for the previous digest): the group
# (router backend) an instance serves in, what ran before it, and the names of its run-time
# environment variables (values stay in the container's config, never in a label).
LABEL_SLOT_GROUP: Final = LABEL_PREFIX + "slot-group"
LABEL_PREVIOUS_DIGEST: Final = LABEL_PREFIX + "previous-digest"
LABEL_PREVIOUS_IMAGE: Final = LABEL_PREFIX + "previous-image"
LABEL_ENV_KEYS: Final = LABEL_PREFIX + "env-keys"
# Names of a release's secrets and how each reaches the app ("DB_PASSWORD:file,API_TOKEN:env");
# never a value or a hash of one.
LABEL_SECRET_KEYS: Final = LABEL_PREFIX + "secret-keys"
LABEL_SECRET_NAME: Final = LABEL_PREFIX + "secret-name"  # on a Docker secret of ours

# -- locks (a created, never started container) ------------------------------------------------
LABEL_LOCK_OWNER: Final = LABEL_PREFIX + "lock-owner"  # DAG/run/task: stable across retries
LABEL_LOCK_SINCE: Final = LABEL_PREFIX + "lock-since"  # UTC, ISO 8601

# -- blue/green switch markers ---------------------------------------------------------------
LABEL_SWITCHED_AT: Final = LABEL_PREFIX + "switched-at"  # seconds since the epoch
LABEL_SWITCHED_AT_UTC: Final = LABEL_PREFIX + "switched-at-utc"  # the same, for people
LABEL_LIVE_GROUP: Final = LABEL_PREFIX + "live-group"
LABEL_PREVIOUS_GROUP: Final = LABEL_PREFIX + "previous-group"

# -- the router ---------------------------------------------------------------------------------
LABEL_CONFIG_HASH: Final = LABEL_PREFIX + "config-hash"  # sha256 of its configuration

# -- one-off containers: image tests and migrations ----------------------------------------------
LABEL_TEST_RUN: Final = LABEL_PREFIX + "test-run"
LABEL_SIDECAR: Final = LABEL_PREFIX + "sidecar"
LABEL_MIGRATION_RUN: Final = LABEL_PREFIX + "migration-run"
LABEL_DATABASE: Final = LABEL_PREFIX + "database"  # a hash of host:port/name, never the URL
LABEL_PHASE: Final = LABEL_PREFIX + "migration-phase"

# -- roles ----------------------------------------------------------------------------------------
ROLE_APP: Final = "app"
ROLE_LOCK: Final = "lock"
ROLE_ROUTER: Final = "router"
ROLE_SWITCH_MARKER: Final = "switch-marker"

# -- Swarm's own labels on a task's container ----------------------------------------------------
SWARM_SERVICE_NAME: Final = "com.docker.swarm.service.name"
SWARM_TASK_NAME: Final = "com.docker.swarm.task.name"  # <service>.<slot>.<task id>
