"""The error hierarchy of docker-delivery, in one module.

Every error the domain raises derives from :class:`DeliveryError`, so callers (operators, the CLI)
can catch one type; the modules that raise them import them from here (and keep them importable
under their own names). Messages say what went wrong and, where there is one, what to do about it,
and quote at most :func:`clip`'s worth of any input. Errors the Docker SDK raises are turned into
:class:`TargetError` (or a subclass) by :func:`docker_delivery.targets.docker_errors.engine_error`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import datetime as dt

    from docker_delivery.health import HealthCheck, HealthReport
    from docker_delivery.images.testing import TestSummary

MESSAGE_LIMIT = 300
"""The most characters one line of an error message takes, whatever the input it quotes."""


def clip(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (``'aaaa...'`` and how long it was): an error
    quotes what it got, never a whole 100,000-character input."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}... ({len(str(value)):,} characters)"


def clip_line(line: str, limit: int = MESSAGE_LIMIT) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."


class DeliveryError(Exception):
    """Base class of every error raised by docker-delivery."""


class NotDeployed(DeliveryError):
    """A step refused before it changed anything (another delivery held the lock): nothing was
    deployed, so the ledger records the attempt as ``not_deployed``, not as a failed
    deployment."""


class SpecInvalid(DeliveryError, ValueError):
    """A spec that cannot be used. ``problems`` holds one line per problem, each starting with
    the field's path (``environments.prod.replicas: must be >= 0``) or the place in the file
    (``YAML: line 3, column 5: ...``). Each line is at most :data:`MESSAGE_LIMIT` characters
    and at most :attr:`SHOWN` are shown, whatever the input."""

    SHOWN = 20

    def __init__(self, origin: str, problems: Sequence[str]) -> None:
        self.origin = clip_line(origin, 120)
        self.problems = [clip_line(p) for p in problems]
        count = f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        lines = "\n".join(f"  - {p}" for p in self.problems[: self.SHOWN])
        more = len(self.problems) - self.SHOWN
        if more > 0:
            lines += f"\n  - ... and {more} more"
        super().__init__(f"invalid spec ({self.origin}), {count}:\n{lines}")


class InvalidReference(DeliveryError, ValueError):
    """An image reference that does not parse, or is not what the caller needs (e.g. not pinned).
    ``reference`` is what was given; the message quotes at most its first 80 characters."""

    def __init__(self, reference: str, reason: str) -> None:
        self.reference = reference
        self.reason = reason
        super().__init__(f"invalid image reference {clip(reference)}: {clip_line(reason, 200)}")


class RegistryError(DeliveryError):
    """An OCI registry refused or failed a request.

    ``registry`` is the registry's address (``host[:port]``) when known. Every subclass takes the
    whole message as its one positional argument, so it can be raised with a message of its own.
    """

    def __init__(self, message: str, *, registry: str | None = None) -> None:
        self.registry = registry
        super().__init__(message)


class ImageNotFound(RegistryError):
    """A manifest, blob, tag or repository the registry does not know.

    ``reference`` is what was looked up (``registry/repository:tag``, ``...@sha256:...``).
    """

    def __init__(
        self, message: str, *, registry: str | None = None, reference: str | None = None
    ) -> None:
        self.reference = reference
        super().__init__(message, registry=registry)


class Unauthorized(RegistryError):
    """The registry (or its token service) refused the credentials, or asked for some."""


class RegistryUnavailable(RegistryError):
    """The registry did not answer usefully (connection error, timeout, 5xx, 429) after retries.

    ``attempts`` is how many requests were made; ``last_error`` describes the last failure.
    """

    def __init__(
        self,
        message: str,
        *,
        registry: str | None = None,
        attempts: int | None = None,
        last_error: str | None = None,
    ) -> None:
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(message, registry=registry)


class RegistryProtocolError(RegistryError):
    """The registry answered something unexpected: a digest mismatch, an unknown status."""


# -- Health checks -------------------------------------------------------------------------------


class HealthCheckInvalid(DeliveryError, ValueError):
    """Health-check settings (or addresses to probe) that cannot work; the message says which."""


class Unhealthy(DeliveryError):
    """An instance failed its health check, exited, or was not healthy by the deadline.

    ``reason`` is ``"unhealthy"`` (too many failures in a row), ``"exited"`` or ``"deadline"``;
    ``report`` is what the prober saw (``healthy`` is False); ``check`` is the check that failed.
    """

    def __init__(self, message: str, *, reason: str, check: HealthCheck, report: HealthReport):
        self.reason = reason
        self.check = check
        self.report = report
        super().__init__(message)

    @property
    def address(self) -> str:
        return self.report.address


# -- Images --------------------------------------------------------------------------------------


class BuildFailed(DeliveryError):
    """The build or the push failed; the message carries the builder's own error."""


class PromotionRefused(DeliveryError):
    """The promotion would skip an environment or break a rule; nothing was changed."""


class RevisionInvalid(DeliveryError, ValueError):
    """A revision that cannot name a build (the message says why and what to give)."""


# -- Tests in the image --------------------------------------------------------------------------


class InvalidTestSpec(DeliveryError, ValueError):
    """An :class:`ImageTest` or :class:`Sidecar` that cannot be run as written."""


class InvalidJUnitReport(DeliveryError, ValueError):
    """A JUnit XML report that does not parse, or has neither ``testsuite`` nor ``testsuites``."""


class SidecarNotReady(DeliveryError):
    """A sidecar exited, or did not accept connections on its port in time."""


class TestTimeout(DeliveryError):
    """The test command ran longer than its timeout; the test container was killed."""

    __test__: ClassVar[bool] = False

    def __init__(self, timeout: float, image: str | None = None) -> None:
        self.timeout = timeout
        self.image = image
        where = f" in {image}" if image else ""
        super().__init__(
            f"tests{where} did not finish within the timeout of {timeout:g}s; the test container "
            "was killed. Raise the timeout if the suite is legitimately slower, or look for a "
            "test that hangs (the output above shows where it stopped)."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.timeout, self.image))


class TestsFailed(DeliveryError):
    """The tests ran and did not pass: a non-zero exit code, or failures or errors reported."""

    __test__: ClassVar[bool] = False

    def __init__(self, summary: TestSummary, image: str | None = None) -> None:
        self.summary = summary
        self.image = image
        where = f" in {image}" if image else ""
        report = "" if summary.report_found else " (no JUnit report was found)"
        super().__init__(f"tests failed{where}: {summary.describe()}{report}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.summary, self.image))


# -- Targets and routers -------------------------------------------------------------------------


class TargetError(DeliveryError):
    """A target could not do what was asked (the engine or Swarm said no)."""


class RouterError(DeliveryError):
    """HAProxy refused a command, did not answer, or reports a state other than the one applied."""


# -- Deployments ---------------------------------------------------------------------------------


class RelayError(DeliveryError):
    """The engine could not carry a request into a container (exec stream failed or timed out)."""


class DeployAborted(DeliveryError):
    """A deployment stopped on a failed check and put back what it had touched."""


class DeploySettingsInvalid(DeliveryError, ValueError):
    """Impossible deployment settings, refused before anything changes."""


class DeploymentLocked(NotDeployed):
    """Another delivery of the same service and environment is in progress; nothing changed."""


class RolloutPaused(DeliveryError):
    """A stage failed with failure_action=pause: the rollout holds where it is."""


class SwitchAborted(DeployAborted):
    """The post-switch check failed and traffic went back to the old colour. ``figures`` holds
    what the check saw (requests, 5xx, ratio, probes, seconds)."""

    def __init__(self, message: str, *, figures: Mapping[str, Any]) -> None:
        self.figures = dict(figures)
        super().__init__(message)


class RetireNotDue(DeliveryError):
    """``retire`` was asked before ``scale_down_delay`` had passed since the switch; ``due`` is
    when it may run (UTC). Run it again then, or wait for it (``wait=True``)."""

    def __init__(self, message: str, *, due: dt.datetime) -> None:
        self.due = due
        super().__init__(message)


class ABTestAborted(DeployAborted):
    """The analysis stopped the test; traffic went back to A, B was removed. ``figures`` holds
    what it saw (step, weight, B's and A's requests, 5xx, ratios, response times, seconds)."""

    def __init__(self, message: str, *, figures: Mapping[str, Any]) -> None:
        self.figures = dict(figures)
        super().__init__(message)


class AbortImpossible(DeliveryError):
    """A held rollout cannot be aborted where it stands (too late: the release already serves)."""


class RollbackImpossible(DeliveryError):
    """Nothing tells what ran before (no label, no warm group), or nothing runs at all."""


class Superseded(DeliveryError):
    """The release no longer serves where its tag would move: another delivery replaced it."""


# -- Infrastructure and migrations ---------------------------------------------------------------


class InfraConflict(DeliveryError):
    """What runs cannot take an infrastructure change now: several digests run (a deployment is
    under way), a blue/green or A/B deployment owns the instances, or the plan is stale."""


class MigrationError(DeliveryError):
    """Base class of what a migration step raises."""


class InvalidMigrationSpec(MigrationError, ValueError):
    """A migration that cannot run as written; nothing was started."""


class MigrationLocked(MigrationError):
    """Another migration of the same database held the lock for longer than ``lock_wait``."""


class MigrationTimeout(MigrationError):
    """The migration command ran longer than its timeout; its container was killed."""


class StatusUnreadable(MigrationError):
    """The image's status command failed, or printed no status JSON."""


class MigrationFailed(MigrationError):
    """The migration command exited non-zero; the message carries the tool's own last words."""

    def __init__(
        self, message: str, *, exit_code: int, version_before: int, version_after: int | None
    ) -> None:
        self.exit_code = exit_code
        self.version_before = version_before
        self.version_after = version_after
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_failed,
            (str(self), self.exit_code, self.version_before, self.version_after),
        )


def _rebuild_failed(
    message: str, exit_code: int, before: int, after: int | None
) -> MigrationFailed:
    return MigrationFailed(message, exit_code=exit_code, version_before=before, version_after=after)


class RollbackPastContract(MigrationError):
    """Rolling code back to an image older than a contract migration already applied."""

    def __init__(self, message: str, *, image: str, contracts: tuple[str, ...]) -> None:
        self.image = image
        self.contracts = contracts
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_past_contract, (str(self), self.image, self.contracts))


def _rebuild_past_contract(
    message: str, image: str, contracts: tuple[str, ...]
) -> RollbackPastContract:
    return RollbackPastContract(message, image=image, contracts=contracts)


# -- The ledger ----------------------------------------------------------------------------------


class LedgerError(DeliveryError):
    """The ledger could not be read or written (a permission, a full disk, a bad argument)."""


class InvalidRecord(LedgerError, ValueError):
    """A deployment record with a missing or invalid field.

    ``field`` names the field at fault, so a caller (or a person reading a log) knows what to fix.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"invalid deployment record: {field}: {problem}")
