"""The Deliveries page's HTML: what runs now and the history, rendered on the server (every
value escaped); the metrics' cards and charts are filled by ``static/deliveries.js``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape
from urllib.parse import urlencode

from docker_delivery.ledger.records import DeploymentRecord

_OUTCOME_CLASS = {
    "success": "ok",
    "failed": "bad",
    "rolled_back": "bad",
    "rejected": "warn",
    "not_deployed": "muted",
}


def _short(digest: str | None) -> str:
    if not digest:
        return '<span class="muted">none</span>'
    return f'<code title="{escape(digest)}">{escape(digest[7:19])}</code>'


def _time(record_time: object) -> str:
    text = f"{record_time:%Y-%m-%d %H:%M:%S}"
    iso = record_time.isoformat() if hasattr(record_time, "isoformat") else text
    return f'<time datetime="{escape(iso)}">{escape(text)}</time>'


def _a(href: str, text: str) -> str:
    return f'<a href="{escape(href)}" target="_top">{escape(text)}</a>'


def _release(release_id: str | None) -> str:
    """A link to the release's records (every service of it), for a record of a release."""
    if not release_id:
        return ""
    href = "?" + urlencode({"release_id": release_id})
    return f'<br><a class="release" href="{escape(href)}">release {escape(release_id)}</a>'


def render_page(
    *,
    current: Sequence[DeploymentRecord],
    history: Sequence[DeploymentRecord],
    links: Callable[[DeploymentRecord], Mapping[str, str]],
    filters: Mapping[str, str | None],
    more: bool,
) -> str:
    """The whole page, with ``current`` (what runs) and ``history`` (newest first)."""
    given = {k: v for k, v in filters.items() if v}
    scope = ", ".join(f"{k} {v}" for k, v in given.items()) or "every service and environment"
    now_rows = "".join(
        "<tr>"
        f"<td>{escape(r.service)}</td><td>{escape(r.environment)}</td>"
        f"<td>{_short(r.digest)}</td><td>{escape(r.revision or '')}</td>"
        f"<td>{_time(r.finished_at)}</td><td>{escape(r.deployment_type)}</td>"
        f"<td>{_a(links(r)['run'], r.run_id)}</td>"
        "</tr>"
        for r in current
    )
    history_rows = "".join(
        f'<tr class="delivery" data-dag-id="{escape(r.dag_id)}" data-run-id="{escape(r.run_id)}">'
        f"<td>{_time(r.finished_at)}</td>"
        f"<td>{escape(r.service)}</td><td>{escape(r.environment)}</td>"
        f"<td>{_short(r.previous_digest)} &rarr; {_short(r.digest)}</td>"
        f"<td>{escape(r.deployment_type)}{'' if r.planned else ' <em>unplanned</em>'}"
        f"{_release(r.release_id)}</td>"
        f'<td><span class="chip {_OUTCOME_CLASS.get(r.outcome, "muted")}">'
        f"{escape(r.outcome.replace('_', ' '))}</span></td>"
        f"<td>{escape(r.approved_by or '')}</td>"
        f'<td class="links">{_a(links(r)["run"], "run")} {_a(links(r)["log"], "log")}</td>'
        "</tr>"
        for r in history
    )
    older = ""
    if more and history:
        query = urlencode(given | {"before": history[-1].finished_at.isoformat()})
        older = f'<p><a class="more" href="?{escape(query)}">Older deliveries</a></p>'
    metric_filters = urlencode({k: v for k, v in given.items() if k in ("service", "environment")})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Deliveries</title>
<link rel="stylesheet" href="static/deliveries.css">
</head><body>
<header><h1>Deliveries</h1><p class="scope">{escape(scope)}</p></header>
<section id="now"><h2>What runs now</h2>
<table><thead><tr><th>Service</th><th>Environment</th><th>Digest</th><th>Revision</th>
<th>Since</th><th>Type</th><th>DAG run</th></tr></thead>
<tbody>{now_rows or '<tr><td colspan="7" class="muted">Nothing delivered yet.</td></tr>'}</tbody>
</table></section>
<section id="metrics" data-query="{escape(metric_filters)}"><h2>Delivery metrics
<span class="muted small" id="metrics-window"></span></h2>
<div id="cards" class="cards"></div><div id="charts" class="charts"></div>
<p class="muted small">DORA's five metrics; levels as DORA's 2024 report places them.</p>
</section>
<section id="history"><h2>History</h2>
<table><thead><tr><th>Finished</th><th>Service</th><th>Environment</th><th>From &rarr; to</th>
<th>Type</th><th>Outcome</th><th>Approved by</th><th></th></tr></thead>
<tbody>{history_rows or '<tr><td colspan="8" class="muted">No deliveries.</td></tr>'}</tbody>
</table>{older}</section>
<script src="static/deliveries.js" defer></script>
</body></html>
"""
