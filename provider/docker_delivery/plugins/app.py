"""The Deliveries view's FastAPI app, mounted by Airflow's API server under ``/docker-delivery``.

Routes (each authorised as Airflow's own pages are: the caller's Airflow login, by bearer token
or the UI's cookie, must allow reading DAG runs; records of a DAG the caller may not read are
left out):

* ``GET /deliveries``: the page (what runs now, the history, the metrics' charts), filtered by
  ``service``, ``environment``, ``dag_id`` and ``run_id`` (the DAG run's tab), or
  ``release_id`` (every service of one release: a history row of a release links there);
* ``GET /api/current``, ``GET /api/history``, ``GET /api/metrics``: the same as JSON.

The page is rendered on the server with what runs and the newest history rows, so it paints
without waiting for a script; the metrics (a pass over the window's records) are fetched by the
page's script and drawn as SVG charts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from docker_delivery.errors import LedgerError
from docker_delivery.ledger import Ledger
from docker_delivery.ledger.metrics import metrics_report
from docker_delivery.ledger.records import DeploymentRecord
from docker_delivery.plugins.page import render_page

STATIC = Path(__file__).parent / "static"
HISTORY_PAGE = 50
"""History rows a page shows; older ones are a link away."""


def _ledger() -> Ledger:
    from docker_delivery.hooks.ledger import open_ledger

    return open_ledger()


def _readable_dags(request: Request, ledger: Ledger) -> set[str] | None:
    """The DAGs (of those in the ledger) whose runs the caller may read; None: all of them."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    user = request.state.docker_delivery_user
    manager = get_auth_manager()
    dag_ids = ledger.dag_ids()
    allowed = {
        dag_id
        for dag_id in dag_ids
        if manager.is_authorized_dag(
            method="GET",
            access_entity=DagAccessEntity.RUN,
            details=DagDetails(id=dag_id),
            user=user,
        )
    }
    return None if len(allowed) == len(dag_ids) else allowed


def _authorised() -> Any:
    """Depends: the caller may read DAG runs (401 without a login, 403 without the right)."""
    check = requires_access_dag("GET", DagAccessEntity.RUN)

    def dependency(request: Request, user: GetUserDep) -> None:
        check(request, user)
        request.state.docker_delivery_user = user

    return Depends(dependency)


def _airflow_root(request: Request) -> str:
    """The path of Airflow's UI: where the app is mounted, less the app's own prefix."""
    root = str(request.scope.get("root_path", ""))
    return root[: -len("/docker-delivery")] if root.endswith("/docker-delivery") else ""


def links(record: DeploymentRecord, root: str) -> dict[str, str]:
    """The record's DAG run, and the log of the task that recorded it, in Airflow's UI."""
    from urllib.parse import quote

    run = f"{root}/dags/{quote(record.dag_id, safe='')}/runs/{quote(record.run_id, safe='')}"
    return {"run": run, "log": f"{run}/tasks/{quote(record.environment + '.record', safe='')}"}


def record_json(record: DeploymentRecord, root: str) -> dict[str, Any]:
    return record.to_dict() | {"links": links(record, root)}


def _when(value: str | None, name: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(400, f"{name}: {value!r} is not an ISO-8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


@dataclass
class Filters:
    """The query's filters of the history: a service, an environment, a DAG and its run (the
    DAG run's tab), and ``before``: the older page's start."""

    service: str | None = None
    environment: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    release_id: str | None = None
    before: str | None = None


def _history(
    request: Request, ledger: Ledger, where: Filters, limit: int
) -> tuple[set[str] | None, list[DeploymentRecord]]:
    """The DAGs the caller may see (None: all) and the newest ``limit`` records they may see
    that match ``where``."""
    dags = _readable_dags(request, ledger)
    if where.dag_id:
        dags = {where.dag_id} if dags is None or where.dag_id in dags else set()
    found = ledger.records(
        where.service,
        where.environment,
        until=_when(where.before, "before"),
        limit=limit,
        newest_first=True,
        dag_ids=dags,
        run_id=where.run_id,
        release_id=where.release_id,
    )
    return dags, found


def create_app() -> FastAPI:
    app = FastAPI(
        title="Docker Delivery",
        description="Deliveries: what runs where, the history, and DORA's five metrics.",
        docs_url=None,
        redoc_url=None,
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    auth = [_authorised()]

    @app.exception_handler(LedgerError)
    async def ledger_error(_request: Request, exc: LedgerError) -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.get("/deliveries", response_class=HTMLResponse, dependencies=auth)
    def page(request: Request, where: Annotated[Filters, Depends()]) -> HTMLResponse:
        ledger = _ledger()
        dags, history = _history(request, ledger, where, HISTORY_PAGE)
        root = _airflow_root(request)
        current = [
            r
            for r in ledger.current(dag_ids=dags)
            if (where.service is None or r.service == where.service)
            and (where.environment is None or r.environment == where.environment)
        ]
        body = render_page(
            current=current,
            history=history,
            links=lambda r: links(r, root),
            filters={
                "service": where.service,
                "environment": where.environment,
                "dag_id": where.dag_id,
                "run_id": where.run_id,
                "release_id": where.release_id,
            },
            more=len(history) == HISTORY_PAGE,
        )
        return HTMLResponse(body)

    @app.get("/api/current", dependencies=auth)
    def current(request: Request) -> list[dict[str, Any]]:
        ledger = _ledger()
        root = _airflow_root(request)
        return [
            record_json(r, root) for r in ledger.current(dag_ids=_readable_dags(request, ledger))
        ]

    @app.get("/api/history", dependencies=auth)
    def history(
        request: Request,
        where: Annotated[Filters, Depends()],
        limit: Annotated[int, Query(ge=1, le=1000)] = HISTORY_PAGE,
    ) -> list[dict[str, Any]]:
        _, found = _history(request, _ledger(), where, limit)
        root = _airflow_root(request)
        return [record_json(r, root) for r in found]

    @app.get("/api/metrics", dependencies=auth)
    def metrics(
        request: Request,
        service: str | None = None,
        environment: str | None = None,
        days: Annotated[float, Query(gt=0, le=3660)] = 84,
        period: Annotated[float, Query(gt=0, le=366)] = 7,
    ) -> dict[str, Any]:
        if period > days:
            raise HTTPException(400, f"period ({period:g} days) is longer than days ({days:g})")
        ledger = _ledger()
        dags = _readable_dags(request, ledger)
        now = dt.datetime.now(dt.timezone.utc)
        summary, series = metrics_report(
            ledger,
            now=now,
            window_days=days,
            period_days=period,
            service=service,
            environment=environment,
            dag_ids=dags,
        )
        return {"summary": summary.as_dict(), "series": [m.as_dict() for m in series]}

    return app
