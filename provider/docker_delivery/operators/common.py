"""What the stage operators share: who holds a lock, and how a step that changed nothing says so.

A step refused before it changed anything (another delivery held the service's lock:
:class:`~docker_delivery.errors.NotDeployed`) pushes the XCom ``not_deployed`` with the reason
before it fails; the stage's record task then writes ``not_deployed`` to the ledger instead of a
failed deployment, so the delivery metrics count only what was deployed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from docker_delivery.errors import NotDeployed

if TYPE_CHECKING:
    from docker_delivery.images.promotion import PromotionResult
    from docker_delivery.images.ref import ImageRef

NOT_DEPLOYED = "not_deployed"  # the XCom key


SHORTEST_DEFERRAL = 30.0
"""Seconds below which a deferrable operator sleeps a wait in its worker instead of deferring
it: a deferral costs a new worker process when it resumes, and Airflow 3.3 can fail a task
resumed within seconds of deferring (the deferring process's exit is read as the resumed try's,
apache/airflow#72716)."""


def lock_owner(context: Context) -> str:
    """Stable across retries of one task: a retry takes over its own lock."""
    ti = context["ti"]
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}"


@contextmanager
def says_when_nothing_changed(context: Context) -> Iterator[None]:
    """Push the XCom ``not_deployed`` (the reason) when the step is refused before it changed
    anything; the error goes on as it was."""
    try:
        yield
    except NotDeployed as exc:
        context["ti"].xcom_push(key=NOT_DEPLOYED, value=str(exc)[:500])
        raise


def tag_what_serves(
    client: Any,
    image: ImageRef,
    environment: str,
    *,
    service: str,
    port: int,
    docker_conn_id: str | None,
    context: Context,
    lock_wait: float,
    log: Callable[[str], None],
    **promotion: Any,
) -> PromotionResult:
    """The environment tag moved to ``image`` in its registry (the connection
    ``docker_conn_id``) if it serves there: :func:`docker_delivery.strategies.release_tag.
    promote_serving`, under the lock this task owns."""
    from docker_delivery.hooks.registry import RegistryHook
    from docker_delivery.strategies.release_tag import promote_serving

    with RegistryHook(docker_conn_id).get_client(image.registry) as registry:
        return promote_serving(
            client,
            registry,
            image,
            environment,
            service=service,
            port=port,
            owner=lock_owner(context),
            lock_wait=lock_wait,
            log=log,
            **promotion,
        )


def approval_of(result: Any) -> tuple[str | None, str | None]:
    """(``approved`` | ``rejected`` | None, who) from an approval task's answer (its XCom, or
    the event that resumes it): approved when ``Approve`` is among the chosen options; who is
    the responding user's name, else id."""
    if not isinstance(result, Mapping) or not result.get("chosen_options"):
        return None, None
    user = result.get("responded_by_user") or {}
    who = str(user.get("name") or user.get("id") or "") or None
    verdict = "approved" if "Approve" in result["chosen_options"] else "rejected"
    return verdict, who
