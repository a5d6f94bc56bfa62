"""HTTP to one registry: authentication as ``docker login`` does it, transient failures retried,
and the registry's error answers turned into our errors.

Authentication (:class:`RegistryAuth`, an ``httpx.Auth``): anonymous first; on a 401 either HTTP
Basic with the given login, or a bearer token fetched from the realm the registry names, cached
per scope. Transient failures (connection errors, timeouts, 429 and 5xx) are retried with
exponential backoff (at least what a ``Retry-After`` asks) before
:class:`~docker_delivery.errors.RegistryUnavailable` is raised. The password never appears in
``repr()``, in an error message or in the log.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
import re
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import httpx

from docker_delivery import __version__
from docker_delivery.errors import (
    ImageNotFound,
    RegistryError,
    RegistryProtocolError,
    RegistryUnavailable,
    Unauthorized,
)

_TRANSIENT_STATUS: Final = frozenset({429, 500, 502, 503, 504})
_MAX_BACKOFF: Final = 30.0
"""Longest wait between two attempts computed from ``backoff`` (seconds)."""
_MAX_RETRY_AFTER: Final = 120.0
"""Longest ``Retry-After`` honoured (seconds); a registry asking for more gets this."""
_CHALLENGE_PARAM: Final = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')

_sleep: Callable[[float], None] = time.sleep
"""How the client waits between attempts (replaced in unit tests)."""


def pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def delete(repository: str) -> str:
    return f"repository:{repository}:delete"


class RegistryAuth:
    """Who we are to one registry, and what it granted: the login, Basic once the registry
    asked for it, bearer tokens per scope. :meth:`for_scope` gives the ``httpx.Auth`` of one
    request.

    ``credentials``, instead of a fixed login: a source of ``(username, password)`` read when
    the registry first asks, and again when it refuses what it was sent (an expiring token, as
    Amazon ECR's authorization tokens are: 12 hours)."""

    def __init__(
        self,
        registry: str,
        username: str | None,
        password: str | None,
        credentials: Callable[[], tuple[str, str]] | None = None,
    ) -> None:
        self.registry = registry
        self.username = username
        self._password = password
        self._credentials = credentials
        self._use_basic = False
        self._tokens: dict[str, str] = {}
        self.fetch_token: Callable[[str, str | None, str], str] | None = None

    @property
    def has_credentials(self) -> bool:
        return (
            self.username is not None or self._password is not None or self._credentials is not None
        )

    def _renew(self) -> None:
        """A fresh login from ``credentials``; the tokens granted for the old one are dropped."""
        assert self._credentials is not None
        self.username, self._password = self._credentials()
        self._tokens.clear()

    def basic_header(self) -> str:
        if self._credentials is not None and self._password is None:
            self._renew()  # the first login from the source
        pair = f"{self.username or ''}:{self._password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def authorization(self, scope: str) -> str | None:
        token = self._tokens.get(scope)
        if token is not None:
            return f"Bearer {token}"
        if self._use_basic:
            return self.basic_header()
        return None

    def for_scope(self, scope: str, *, replayable: bool) -> httpx.Auth:
        """The authentication of one request needing ``scope``; ``replayable``: whether its body
        can be sent again after a 401 (an upload streamed from another registry cannot)."""
        return _ScopedAuth(self, scope, replayable)

    def authenticate(self, challenge: str, scope: str, sent: str | None, where: str) -> None:
        """Act on a 401's ``WWW-Authenticate`` challenge so the request can be sent again."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.has_credentials:
                raise self.unauthorized(f"requires a login ({where}) and none was given")
            refused = sent is not None and sent.startswith("Basic ")
            if refused and self._credentials is None:
                raise self.unauthorized(f"refused the credentials ({where})")
            if refused:
                self._renew()  # an expired login: a fresh one, once for this request
            self._use_basic = True
            return
        if scheme == "bearer":
            realm = params.get("realm")
            if not realm:
                raise RegistryProtocolError(
                    f"registry {self.registry} asked for a bearer token without a realm ({where})",
                    registry=self.registry,
                )
            assert self.fetch_token is not None
            self._tokens[scope] = self.fetch_token(
                realm, params.get("service"), params.get("scope") or scope
            )
            return
        raise self.unauthorized(
            f"asks for authentication scheme {scheme or '(none)'!r}, which is not supported "
            f"({where})"
        )

    def unauthorized(self, what: str, *, denied: bool = False) -> Unauthorized:
        separator = "" if what.startswith("'") else " "
        if self.has_credentials:
            advice = f"check the connection's login/password (login {self.username!r})"
            if denied:
                advice += " and that this login may read and write the repository"
        else:
            advice = "check the connection's login/password: set them for this registry"
        return Unauthorized(
            f"registry {self.registry}{separator}{what}: {advice}", registry=self.registry
        )


class _ScopedAuth(httpx.Auth):
    def __init__(self, auth: RegistryAuth, scope: str, replayable: bool) -> None:
        self._auth, self._scope, self._replayable = auth, scope, replayable

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        auth, scope = self._auth, self._scope
        sent = auth.authorization(scope)
        if sent is not None:
            request.headers["Authorization"] = sent
        response = yield request
        if response.status_code != 401:
            return
        challenge = response.headers.get("WWW-Authenticate", "")
        discard(response)
        where = f"HTTP 401 on {request.method} {request.url.path}"
        if not self._replayable:
            raise auth.unauthorized(
                f"asked for credentials in the middle of {request.method} upload"
            )
        auth.authenticate(challenge, scope, sent, where)
        again = auth.authorization(scope)
        if again is not None:
            request.headers["Authorization"] = again
        response = yield request
        if response.status_code == 401:
            discard(response)
            if auth.has_credentials:
                raise auth.unauthorized(f"refused the credentials ({where})")
            raise auth.unauthorized(f"requires a login ({where}) and none was given")


class RegistryHttp:
    """Requests to one registry at ``base_url``: authenticated as needed, transient failures
    retried ``retries`` times, waiting ``backoff * 2**attempt`` seconds (capped at 30 s, at least
    what a ``Retry-After`` header asks)."""

    def __init__(
        self,
        registry: str,
        base_url: str,
        auth: RegistryAuth,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        transport: httpx.BaseTransport | None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.registry = registry
        self.base_url = base_url
        self.auth = auth
        self.retries = retries
        self._backoff = max(0.0, backoff)
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=True,
            headers={"User-Agent": f"docker-delivery/{__version__}"},
        )
        auth.fetch_token = self._fetch_token

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        scope: str | None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | httpx.QueryParams | None = None,
        content: bytes | Iterator[bytes] | None = None,
        stream: bool = False,
        attempts: int | None = None,
    ) -> httpx.Response:
        """Send one request, authenticating as needed and retrying transient failures.

        ``scope`` is the token scope the request needs (``None``: send no credentials, e.g. to
        a token service). Returns any response that is not a transient failure; raises
        :class:`RegistryUnavailable` when every attempt failed.
        """
        total = self.retries + 1 if attempts is None else attempts
        last_error = ""
        delay = 0.0
        for attempt in range(total):
            if attempt:
                _sleep(delay)
            # Merge the parameters into the URL's own query: httpx would replace it, and an
            # upload location carries its state there.
            target = httpx.URL(url).copy_merge_params(params) if params else httpx.URL(url)
            request = self._client.build_request(
                method, target, headers=dict(headers or {}), content=content
            )
            auth = (
                None
                if scope is None
                else self.auth.for_scope(scope, replayable=not isinstance(content, Iterator))
            )
            try:
                response = self._client.send(request, stream=stream, auth=auth)
            except httpx.UnsupportedProtocol as exc:
                raise RegistryError(
                    f"cannot reach registry {self.registry} at {url}: {exc}",
                    registry=self.registry,
                ) from None
            except httpx.TransportError as exc:
                last_error = f"{method} {httpx.URL(url).path}: {type(exc).__name__}: {exc}"
                delay = self.delay(attempt, None)
                continue
            if response.status_code in _TRANSIENT_STATUS:
                last_error = (
                    f"{method} {httpx.URL(url).path}: HTTP {response.status_code} "
                    f"{response.reason_phrase}"
                )
                delay = self.delay(attempt, response.headers.get("Retry-After"))
                response.close()
                continue
            return response
        raise self.unavailable(total, last_error)

    def delay(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self._backoff * 2.0**attempt, _MAX_BACKOFF)
        asked = _parse_retry_after(retry_after)
        if asked is not None:
            delay = max(delay, min(asked, _MAX_RETRY_AFTER))
        return delay

    def unavailable(self, attempts: int, last_error: str) -> RegistryUnavailable:
        hint = ""
        if "SSL" in last_error or "certificate" in last_error.lower():
            hint = " If the registry speaks plain HTTP, set the scheme to http."
        noun = "attempt" if attempts == 1 else "attempts"
        return RegistryUnavailable(
            f"registry {self.registry} ({self.base_url}) is unavailable: {attempts} {noun} "
            f"failed, the last with {last_error}. Check that the registry is running and "
            f"reachable from this machine.{hint}",
            registry=self.registry,
            attempts=attempts,
            last_error=last_error,
        )

    def _fetch_token(self, realm: str, service: str | None, scope: str) -> str:
        query = httpx.QueryParams()
        if service:
            query = query.add("service", service)
        for item in scope.split():
            query = query.add("scope", item)
        auth = self.auth
        headers = {"Authorization": auth.basic_header()} if auth.has_credentials else {}
        response = self.request("GET", realm, scope=None, params=query, headers=headers)
        with closing(response):
            if response.status_code in (401, 403):
                raise auth.unauthorized(
                    f"'s token service ({httpx.URL(realm).host}) refused the credentials "
                    f"(HTTP {response.status_code})"
                )
            if response.status_code != 200:
                raise RegistryProtocolError(
                    f"token service {realm} of registry {self.registry} answered HTTP "
                    f"{response.status_code}",
                    registry=self.registry,
                )
            document = json_object(response, self.registry)
        token = document.get("token") or document.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryProtocolError(
                f"token service {realm} of registry {self.registry} returned no token",
                registry=self.registry,
            )
        return token

    # -- the registry's error answers ---------------------------------------------------------

    def not_found(self, response: httpx.Response, where: str, kind: str) -> ImageNotFound:
        detail = error_text(response)
        detail = f" ({detail})" if detail else ""
        if kind == "repository":
            advice = "check the repository name and that an image was pushed to it"
        elif kind == "blob":
            advice = "check that the image was pushed completely to this registry"
        else:
            advice = "check that this tag or digest was pushed to this registry"
        return ImageNotFound(
            f"{kind} {where} not found in registry {self.registry}{detail}: {advice}",
            registry=self.registry,
            reference=where,
        )

    def failure(self, response: httpx.Response, doing: str) -> RegistryError:
        status = response.status_code
        detail = error_text(response)
        detail = f": {detail}" if detail else ""
        if status == 403:
            return self.auth.unauthorized(f"denied {doing} (HTTP 403{detail})", denied=True)
        if status == 401:
            return self.auth.unauthorized(f"refused {doing} (HTTP 401{detail})")
        return RegistryProtocolError(
            f"registry {self.registry} answered HTTP {status} {response.reason_phrase} when "
            f"{doing}{detail}",
            registry=self.registry,
        )


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ``("bearer", {"realm": ..., ...})``."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for key, value in _CHALLENGE_PARAM.findall(rest):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[key.lower()] = value
    return scheme.lower(), params


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


@contextmanager
def closing(response: httpx.Response) -> Iterator[httpx.Response]:
    try:
        yield response
    finally:
        response.close()


def discard(response: httpx.Response) -> None:
    try:
        response.read()
    except httpx.HTTPError:
        pass
    finally:
        response.close()


def json_object(response: httpx.Response, registry: str) -> dict[str, Any]:
    try:
        document = response.json()
    except (UnicodeDecodeError, json.JSONDecodeError):
        document = None
    if not isinstance(document, dict):
        raise RegistryProtocolError(
            f"registry {registry} answered {response.request.method} "
            f"{response.request.url.path} with something that is not a JSON object",
            registry=registry,
        )
    return document


def _registry_errors(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        if not response.is_stream_consumed:
            response.read()
        document = json.loads(response.content) if response.content else None
    except (httpx.HTTPError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    if not isinstance(document, dict) or not isinstance(document.get("errors"), list):
        return []
    return [error for error in document["errors"] if isinstance(error, dict)]


def error_codes(response: httpx.Response) -> set[str]:
    return {str(error.get("code", "")) for error in _registry_errors(response)}


def error_text(response: httpx.Response) -> str:
    """The registry's own error codes and messages, e.g. ``MANIFEST_UNKNOWN: manifest unknown``."""
    parts = []
    for error in _registry_errors(response):
        code = error.get("code", "")
        message = error.get("message", "")
        parts.append(f"{code}: {message}" if code and message else str(code or message))
    return "; ".join(part for part in parts if part)
