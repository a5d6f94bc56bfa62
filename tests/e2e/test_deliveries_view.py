"""The Deliveries view in a real browser: Airflow's API server (with the provider's plugin, as
Airflow loads it) and Debian's chromium, headless. The ledger is seeded with a made-up history
and one delivery of a real DAG run; the page loads inside Airflow's UI, its charts draw, a row
links to its DAG run, the DAG run's tab shows that run's delivery, and a request without a login
is refused. A screenshot of the page is kept in test-artifacts/deliveries-view.png.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kit.airflow_ui import ApiServer, api_server, browser, load
from kit.ledger_history import seed

from docker_delivery.ledger import DeploymentRecord, Ledger

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DAG_ID, RUN_ID = "deliver_web", "manual__view_test"
DIGEST = "sha256:" + "d" * 64
RELEASE, RELEASE_RUN = "shop-production-0badc0de", "manual__release"


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    home = tmp_path_factory.mktemp("airflow-ui")
    dags = home / "dags"
    dags.mkdir()
    (dags / "deliver_web.py").write_text(
        textwrap.dedent(
            f"""
            import pendulum
            from airflow.sdk import DAG
            from airflow.providers.standard.operators.empty import EmptyOperator

            with DAG("{DAG_ID}", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
                EmptyOperator(task_id="production.record")
            """
        )
    )
    now = dt.datetime.now(dt.timezone.utc)
    ledger = Ledger(home / "ledger.db")
    seed(ledger, 2000, now=now)
    with api_server(home, ledger=str(home / "ledger.db"), dags=dags, role="admin") as server:
        server.airflow("dags", "reserialize")
        server.airflow("dags", "trigger", DAG_ID, "--run-id", RUN_ID)
        ledger.record(
            DeploymentRecord(
                service="web", environment="production", digest=DIGEST,
                previous_digest=None, image=f"registry.example/web@{DIGEST}",
                deployment_type="blue_green", outcome="success",
                started_at=now - dt.timedelta(minutes=3), finished_at=now,
                revision="feedbeef01", committed_at=now - dt.timedelta(hours=1),
                dag_id=DAG_ID, run_id=RUN_ID, approved_by="ada", approval="approved",
            )
        )  # fmt: skip
        for service in ("api", "web"):  # a release of two services, rolled back
            ledger.record(
                DeploymentRecord(
                    service=service, environment="production", digest=DIGEST,
                    previous_digest=None, image=f"registry.example/{service}@{DIGEST}",
                    deployment_type="blue_green", outcome="rolled_back",
                    started_at=now - dt.timedelta(minutes=5),
                    finished_at=now - dt.timedelta(minutes=1), revision=None, committed_at=None,
                    dag_id=DAG_ID, run_id=RELEASE_RUN, approved_by=None, approval=None,
                    release_id=RELEASE,
                )
            )  # fmt: skip
        yield server


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser() as started:
        yield started


@pytest.fixture(scope="module")
def page(ui: ApiServer, chromium: Any) -> Iterator[Any]:
    """A browser page logged in as the UI's login page does: the ``_token`` cookie."""
    context = chromium.new_context(viewport={"width": 1440, "height": 1300})
    context.add_cookies([{"name": "_token", "value": ui.token(), "url": ui.url + "/"}])
    yield context.new_page()
    context.close()


def test_the_view_loads_in_airflows_ui_with_its_charts(ui: ApiServer, page: Any) -> None:
    frame = page.frame_locator("iframe[title='Deliveries']")
    rows = frame.locator("#history tr.delivery")
    load(page, f"{ui.url}/plugin/deliveries", lambda: rows.first.wait_for(timeout=60_000))
    assert rows.count() == 50, "one page of history"
    assert rows.first.get_attribute("data-run-id") == RUN_ID, "the newest first"
    now_rows = frame.locator("#now tbody tr")
    assert now_rows.count() == 18, "6 services in 3 environments"
    frame.locator("body[data-metrics-drawn='true']").wait_for(timeout=60_000)
    charts = frame.locator("#charts svg[data-metric]")
    assert charts.count() == 5
    for n in range(5):
        assert charts.nth(n).locator("circle.point").count() >= 10, "a point per week"
    cards = frame.locator("#cards .card")
    assert cards.count() == 5
    assert cards.nth(0).locator(".level").text_content() in ("elite", "high", "medium", "low")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "deliveries-view.png"))
    assert (ARTIFACTS / "deliveries-view.png").stat().st_size > 10_000


def test_a_history_row_links_to_its_dag_run(ui: ApiServer, page: Any) -> None:
    load(page, f"{ui.url}/docker-delivery/deliveries")
    row = page.locator(f"#history tr.delivery[data-run-id='{RUN_ID}']")
    link = row.locator("td.links a", has_text="run")
    assert link.get_attribute("href") == f"/dags/{DAG_ID}/runs/{RUN_ID}"
    log = row.locator("td.links a", has_text="log")
    assert log.get_attribute("href") == f"/dags/{DAG_ID}/runs/{RUN_ID}/tasks/production.record"
    link.click()
    page.wait_for_url(f"{ui.url}/dags/{DAG_ID}/runs/{RUN_ID}**", timeout=30_000)
    page.get_by_text(RUN_ID).first.wait_for(timeout=60_000)  # Airflow's page of that run


def test_the_dag_run_tab_shows_that_runs_delivery(ui: ApiServer, page: Any) -> None:
    frame = page.frame_locator("iframe[title='Delivery']")
    rows = frame.locator("#history tr.delivery")
    load(
        page,
        f"{ui.url}/dags/{DAG_ID}/runs/{RUN_ID}/plugin/delivery",
        lambda: rows.first.wait_for(timeout=60_000),
    )
    assert rows.count() == 1
    assert rows.first.get_attribute("data-run-id") == RUN_ID
    assert "ada" in rows.first.inner_text() and "blue_green" in rows.first.inner_text()


def test_a_release_row_links_to_every_service_of_the_release(ui: ApiServer, page: Any) -> None:
    load(page, f"{ui.url}/docker-delivery/deliveries")
    row = page.locator(f"#history tr.delivery[data-run-id='{RELEASE_RUN}']").first
    link = row.locator("a.release")
    assert link.inner_text() == f"release {RELEASE}"
    link.click()
    page.wait_for_url(f"**release_id={RELEASE}", timeout=30_000)
    rows = page.locator("#history tr.delivery")
    rows.first.wait_for(timeout=30_000)
    assert sorted(r.inner_text().split()[2] for r in rows.all()) == ["api", "web"]
    assert all("rolled back" in r.inner_text() for r in rows.all())


def test_a_request_without_a_login_is_refused(ui: ApiServer, chromium: Any) -> None:
    for path in ("/docker-delivery/deliveries", "/docker-delivery/api/history",
                 "/docker-delivery/api/metrics"):  # fmt: skip
        assert httpx.get(ui.url + path, timeout=30).status_code == 401, path
        forged = httpx.get(ui.url + path, cookies={"_token": "forged"}, timeout=30)
        assert forged.status_code == 403, path
    anonymous = chromium.new_context().new_page()
    answer = load(anonymous, f"{ui.url}/docker-delivery/deliveries")
    assert answer is not None and answer.status == 401
    assert "Not authenticated" in anonymous.content()
    anonymous.context.close()


def test_the_api_gives_the_same_as_json(ui: ApiServer) -> None:
    headers = {"Authorization": f"Bearer {ui.token()}"}
    base = f"{ui.url}/docker-delivery/api"
    history = httpx.get(f"{base}/history", params={"run_id": RUN_ID}, headers=headers).json()
    assert [(r["dag_id"], r["digest"]) for r in history] == [(DAG_ID, DIGEST)]
    assert history[0]["links"]["run"] == f"/dags/{DAG_ID}/runs/{RUN_ID}"
    current = httpx.get(f"{base}/current", headers=headers).json()
    assert {(c["service"], c["environment"]) for c in current} >= {("web", "production")}
    metrics = httpx.get(f"{base}/metrics", params={"days": 28, "period": 7}, headers=headers)
    data = metrics.json()
    assert len(data["series"]) == 4 and data["summary"]["window_days"] == 28
    assert set(data["summary"]["levels"]) == {
        "deployment_frequency", "change_lead_time", "change_fail_rate", "recovery_time",
        "rework_rate",
    }  # fmt: skip
    bad = httpx.get(f"{base}/metrics", params={"days": 7, "period": 14}, headers=headers)
    assert bad.status_code == 400 and "longer than days" in bad.text
    plugins = httpx.get(f"{ui.url}/api/v2/plugins", headers=headers).json()["plugins"]
    [ours] = [p for p in plugins if p["name"] == "docker_delivery"]
    assert {(v["url_route"], v["destination"]) for v in ours["external_views"]} == {
        ("deliveries", "nav"),
        ("delivery", "dag_run"),
    }
