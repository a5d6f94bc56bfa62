"""What revision a pipeline run delivers, read from its build context when the run names none.

Called by the ``what_to_deliver`` task at run time, never while a DAG file is parsed (it may
run git). This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

from docker_delivery.errors import RevisionInvalid as RevisionInvalid

__all__ = [
    "RevisionInvalid",
    "as_tag",
    "content_hash",
    "resolve_revision",
    "source_revision",
]

_SHA = re.compile(r"^[0-9a-f]{7,64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _git(context: Path, *args: str) -> str | None:
    try:
        run = subprocess.run(
            # read-only: --no-optional-locks keeps `git status` from taking the index lock
            ["git", "--no-optional-locks", "-C", str(context), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return run.stdout.strip() if run.returncode == 0 else None


def content_hash(context: Path) -> str:
    """SHA-1 of the context's files (names and contents; ``__pycache__`` and ``.git`` left
    out): the same files give the same revision, so a second run builds nothing."""
    digest = hashlib.sha1()
    files = sorted(
        p
        for p in context.rglob("*")
        if p.is_file() and not {"__pycache__", ".git"} & set(p.relative_to(context).parts)
    )
    for path in files:
        digest.update(str(path.relative_to(context)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def source_revision(context: str | Path) -> str:
    """The context's git HEAD when it is a clean git work tree, else :func:`content_hash`."""
    path = Path(context)
    head = _git(path, "rev-parse", "HEAD")
    if head and _SHA.match(head) and _git(path, "status", "--porcelain", "--", ".") == "":
        return head
    return content_hash(path)


def commit_time(revision: str, context: str | Path) -> str | None:
    """The committer time (ISO 8601) of ``revision`` in the context's repository: where lead
    time starts; None when the revision is not a commit there (a content hash, no git)."""
    if not _SHA.match(revision):
        return None
    return _git(Path(context), "show", "-s", "--format=%cI", revision) or None


def resolve_revision(revision: str, context: str | Path) -> str:
    """``revision`` as the tag of its build: a commit SHA as given; a git ref (``main``,
    ``v1.2``) resolved to its commit in the context's repository (a ref moves, a SHA does not:
    a build is found again by its revision)."""
    revision = revision.strip()
    if _SHA.match(revision):
        return revision
    if not _TAG.match(revision):
        raise RevisionInvalid(
            f"revision {revision!r} can be neither a commit SHA nor a git ref: give a SHA"
        )
    sha = _git(Path(context), "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    if sha and _SHA.match(sha):
        return sha
    raise RevisionInvalid(
        f"revision {revision!r} is not a commit SHA, and {context} is not a git work tree that "
        "knows it as a ref: give the commit SHA"
    )


def as_tag(revision: str) -> str:
    """``revision`` (e.g. the spec's rendered ``build.revision``) if it can be an image tag."""
    revision = revision.strip()
    if not _TAG.match(revision):
        raise RevisionInvalid(
            f"revision {revision!r} cannot be an image tag: use letters, digits, '_', '.', '-' "
            "(at most 128, not starting with '.' or '-')"
        )
    return revision
