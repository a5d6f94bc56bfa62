"""The run-time callables of a delivery DAG: plain functions its Python and branch tasks run
(they run in the task, never while the DAG file is parsed)."""

from __future__ import annotations

import logging
import time
from typing import Any

from docker_delivery.templates.plan import BRANCH, BUILD, REDEPLOY

__all__ = ["choose_deploy", "http_check", "redeploy", "release", "what_to_deliver"]

log = logging.getLogger(__name__)


def what_to_deliver(
    context_dir: str,
    default_revision: str | None = None,
    image_param: str = "image",
    default_image: str | None = None,
    **context: Any,
) -> str:
    """``redeploy`` when the run has an image already built (param ``image_param``, or the
    newest promotion event that triggered it, or ``default_image``: a release's service given
    by digest), else ``build`` with the revision (XCom ``revision``):
    param ``revision`` (a SHA, or a git ref resolved in the context), the spec's rendered
    ``build.revision`` as it is, or the context's own revision (git HEAD, or a content hash)."""
    from docker_delivery.images.ref import ImageRef
    from docker_delivery.templates.source import (
        as_tag,
        commit_time,
        resolve_revision,
        source_revision,
    )

    params, ti = context["params"], context["ti"]
    scope = ti.task_id.rsplit(".", 1)[0] + "." if "." in ti.task_id else ""
    image = str(params.get(image_param) or "").strip()
    if not image:
        events = context.get("triggering_asset_events") or {}
        found = [e for seq in events.values() for e in seq if (e.extra or {}).get("image")]
        if found:
            newest = max(found, key=lambda e: e.timestamp)
            image = str(newest.extra["image"])
            log.info("triggered by the promotion %s (%s)", newest.asset.name, image)
    image = image or (default_image or "")
    if image:
        ref = ImageRef.parse(image).require_pinned()  # a tag moves: only a digest is redeployed
        ti.xcom_push(key="image", value=str(ref))
        log.info("redeploying %s: built before, so build and tests are skipped", ref)
        return scope + REDEPLOY
    given = str(params.get("revision") or "").strip()
    if given:
        revision = resolve_revision(given, context_dir)
    elif default_revision and default_revision.strip():
        revision = as_tag(default_revision)
    else:
        revision = source_revision(context_dir)
    ti.xcom_push(key="revision", value=revision)
    ti.xcom_push(key="committed_at", value=commit_time(revision, context_dir))
    log.info("delivering revision %s (built once, from %s)", revision, context_dir)
    return scope + BUILD


def _scoped(scope: str, task_id: str) -> str:
    return f"{scope}.{task_id}" if scope else task_id


def redeploy(scope: str = "", **context: Any) -> str:
    image = str(context["ti"].xcom_pull(task_ids=_scoped(scope, BRANCH), key="image"))
    log.info("redeploying %s", image)
    return image


def release(scope: str = "", **context: Any) -> str:
    """The digest-pinned image this run delivers: the build's, or the one to redeploy (of the
    service ``scope`` in a release)."""
    ti = context["ti"]
    image = ti.xcom_pull(task_ids=_scoped(scope, BUILD)) or ti.xcom_pull(
        task_ids=_scoped(scope, BRANCH), key="image"
    )
    if not image:
        raise ValueError("neither a build nor an image to redeploy: nothing to deliver")
    log.info("releasing %s", image)
    return str(image)


def choose_deploy(param: str, paths: dict[str, str], **context: Any) -> str:
    """The first task of the deployment type the run's ``param`` names."""
    chosen = str(context["params"].get(param) or next(iter(paths)))
    if chosen not in paths:
        raise ValueError(f"param {param}: {chosen!r} is not one of {', '.join(paths)}")
    log.info("deploying by %s (param %s)", chosen, param)
    return paths[chosen]


def http_check(
    url: str,
    status: int = 200,
    contains: str | None = None,
    timeout: float = 5.0,
    attempts: int = 3,
    interval: float = 1.0,
) -> dict[str, Any]:
    """GET ``url``: it must answer ``status`` (and contain ``contains``) within ``attempts``."""
    import urllib.error
    import urllib.request

    problem = ""
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                code, body = answer.status, answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            code, body = exc.code, exc.read().decode("utf-8", "replace")
        except OSError as exc:
            code, body = 0, ""
            problem = f"no answer ({exc})"
        if code == status and (not contains or contains in body):
            log.info("GET %s: %s%s", url, code, f", has {contains!r}" if contains else "")
            return {"url": url, "status": code, "attempts": attempt}
        if code:
            problem = f"answered {code}" + (
                f" without {contains!r}" if code == status and contains else f", not {status}"
            )
        log.info("GET %s (try %d of %d): %s", url, attempt, attempts, problem)
        if attempt < attempts:
            time.sleep(interval)
    raise RuntimeError(f"smoke test failed: GET {url} {problem} after {attempts} tries")


def engine_host_of(engine_conn_id: str) -> str:
    """The host of the engine connection ``engine_conn_id`` (the ``engine_host`` macro of a
    delivery DAG: the routers' public URLs on a remote engine)."""
    from docker_delivery.hooks.engine import DockerEngineHook, engine_host

    return engine_host(DockerEngineHook(engine_conn_id).base_url())
