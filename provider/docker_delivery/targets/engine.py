"""EngineTarget: a service is a set of labelled containers on one Docker Engine.

Each container runs one release by digest in one slot (1..N). Containers of a service and
environment share a local bridge network (``dd-<service>-<env>``) with the router; a Swarm
target's network of the same name is swarm-scoped and attachable instead (see
:func:`create_network`).

A release's secret files are copied into its container (``put_archive``, ``/run/secrets/<name>``,
mode 0444) after it is created and before it starts; its extra networks are connected then too.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from docker_delivery.targets.base import (
    SECRETS_DIR,
    Release,
    SecretMount,
    TargetError,
    check_name,
)
from docker_delivery.targets.inventory import Instance, Inventory, network_name_of
from docker_delivery.targets.labels import (
    LABEL_ENVIRONMENT,
    LABEL_MANAGED,
    LABEL_SERVICE,
    LABEL_SLOT,
    LABEL_SLOT_GROUP,
)

if TYPE_CHECKING:
    import docker


def network_name(service: str, environment: str) -> str:
    return network_name_of(check_name("service", service), check_name("environment", environment))


def network_exists(client: docker.DockerClient, name: str, *, scope: str | None = None) -> bool:
    """Whether network ``name`` exists (in ``scope`` when given: ``local`` or ``swarm``)."""
    return any(  # names= filters by prefix
        n.name == name and scope in (None, n.attrs.get("Scope"))
        for n in client.networks.list(names=[name])
    )


def require_networks(client: docker.DockerClient, release: Release) -> None:
    """TargetError unless every extra network ``release`` joins exists."""
    missing = [n for n in release.networks if not network_exists(client, n)]
    if missing:
        raise TargetError(
            f"networks {missing} do not exist: apply the environment's infrastructure first "
            "(ApplyInfraOperator creates them)"
        )


def create_network(
    client: docker.DockerClient, name: str, service: str, environment: str, *, swarm: bool
) -> bool:
    """Create the network ``name`` unless it exists; True if this call created it.

    ``swarm`` networks are attachable overlays, so Swarm tasks on every node and plain
    containers (the router) share them. Engine targets use local bridge networks: attaching a
    container to a swarm-scoped network goes through the Swarm manager, which makes every start
    slower (about 0.35 s here) and lets a busy manager fail it ("attaching to network failed").
    """
    if network_exists(client, name):
        return False
    in_swarm = swarm and client.info().get("Swarm", {}).get("LocalNodeState") == "active"
    client.networks.create(
        name,
        driver="overlay" if in_swarm else "bridge",
        labels={LABEL_MANAGED: "true", LABEL_SERVICE: service, LABEL_ENVIRONMENT: environment},
        **({"attachable": True} if in_swarm else {}),
    )
    return True


def ensure_network(
    client: docker.DockerClient, service: str, environment: str, *, swarm: bool = False
) -> str:
    """The service's network, created once (an attachable overlay for a Swarm target).

    A network of that name of the other kind (made by an earlier version, which made every
    network swarm-scoped inside a Swarm, and swarm-scoped bridges for Swarm targets; or for the
    other kind of target) is made again as it should be when nothing is attached to it. An
    engine target keeps using a swarm-scoped one in use (its starts are slower, nothing is cut
    off), a Swarm target a swarm-scoped bridge in use (:func:`overlay_or_warning` says what that
    costs); a Swarm target cannot use a local one.
    """
    name = network_name(service, environment)
    in_swarm = swarm and client.info().get("Swarm", {}).get("LocalNodeState") == "active"

    def wrong(net: Any) -> bool:
        if in_swarm:
            return bool(net.attrs.get("Scope") != "swarm" or net.attrs.get("Driver") != "overlay")
        return bool(net.attrs.get("Scope") == "swarm")

    in_use = _drop_unused_network(client, name, wrong)
    created = create_network(client, name, service, environment, swarm=swarm)
    if not created and in_use and swarm and not network_exists(client, name, scope="swarm"):
        raise TargetError(
            f"network {name} is local-scoped and in use (containers of an engine target); a "
            "Swarm service needs it swarm-scoped: remove the service's containers (the network "
            "is then made again), or keep the environment on the engine target"
        )
    return name


def overlay_or_warning(client: docker.DockerClient, name: str) -> str | None:
    """None when the Swarm network ``name`` is an overlay; else what its kind costs."""
    for net in client.networks.list(names=[name]):
        if net.name == name and net.attrs.get("Driver") != "overlay":
            return (
                f"network {name} is a {net.attrs.get('Driver')} network on each node (made by an "
                "earlier version): the router reaches only the tasks on its own node; it is "
                "made an overlay once nothing uses it (remove the service's Swarm services)"
            )
    return None


def _drop_unused_network(
    client: docker.DockerClient, name: str, wrong: Callable[[Any], bool]
) -> bool:
    """Remove network ``name`` if it is of the ``wrong`` kind and nothing uses it; True if such
    a network is kept because it is in use."""
    import docker.errors

    for net in client.networks.list(names=[name]):
        if net.name != name or not wrong(net):
            continue
        net.reload()
        if net.attrs.get("Containers"):
            return True
        try:
            net.remove()
        except docker.errors.APIError:
            return True  # attached meanwhile, or used by a Swarm service
    return False


TRANSIENT_START_ERRORS = ("attaching to network failed", "context deadline exceeded")


def start_container(
    container: Any, *, attempts: int = 4, log: Callable[[str], None] = print
) -> None:
    """``container.start()``, again after a pause when the engine failed it transiently (a network
    attachment the Swarm manager did not answer in time); other errors are raised at once."""
    import docker.errors

    for attempt in range(1, attempts + 1):
        try:
            container.start()
            return
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            if attempt == attempts or not any(t in text for t in TRANSIENT_START_ERRORS):
                raise
            pause = 0.5 * 2 ** (attempt - 1)
            log(f"starting {container.name} failed ({text}); trying again in {pause:g}s")
            time.sleep(pause)


def pull_if_missing(
    client: docker.DockerClient, release: Release, log: Callable[[str], None]
) -> None:
    """Pull ``release``'s image by digest unless the engine has it."""
    import docker.errors

    try:
        client.images.get(str(release.image))
    except docker.errors.ImageNotFound:
        log(f"pulling {release.image}")
        try:
            client.images.pull(release.image.name, tag=release.image.digest)
        except docker.errors.APIError as exc:
            raise TargetError(f"cannot pull {release.image}: {exc.explanation}") from exc


LOG_TAIL_LINES = 5
LOG_TAIL_CHARS = 600


def log_tail(container: Any, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines a container printed (stdout and stderr), at most
    :data:`LOG_TAIL_CHARS` characters, for an error message; "" when there are none."""
    import docker.errors

    try:
        raw = container.logs(stdout=True, stderr=True, tail=lines)
    except docker.errors.APIError:
        return ""
    return last_lines(bytes(raw).decode("utf-8", "replace"), lines)


def last_lines(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of ``text`` joined by `` | ``, each cut at 200
    characters, at most :data:`LOG_TAIL_CHARS` in all."""
    kept = [line.rstrip()[:200] for line in text.strip().splitlines() if line.strip()][-lines:]
    out = " | ".join(kept)
    return out if len(out) <= LOG_TAIL_CHARS else "..." + out[-LOG_TAIL_CHARS:]


def demux_log(raw: bytes) -> str:
    """The text of a log the engine sent multiplexed (8-byte frame headers: stream, 0, 0, 0,
    big-endian size), as for a container or task without a TTY; raw text is returned as is."""
    if len(raw) < 8 or raw[0] not in (0, 1, 2) or raw[1:4] != b"\0\0\0":
        return raw.decode("utf-8", "replace")
    out, at = [], 0
    while at + 8 <= len(raw):
        size = int.from_bytes(raw[at + 4 : at + 8], "big")
        out.append(raw[at + 8 : at + 8 + size])
        at += 8 + size
    return b"".join(out).decode("utf-8", "replace")


def exit_message(name: str, container: Any) -> str:
    """``<name> exited with code 3; its last lines: ...``: why a container stopped."""
    state = container.attrs.get("State", {})
    restarts = container.attrs.get("RestartCount", 0)
    if state.get("Running"):  # Docker keeps no exit code once it has restarted it
        what = f"{name} exited and was restarted {restarts} time(s)"
    else:
        what = f"{name} exited with code {state.get('ExitCode')}"
        if state.get("Error"):
            what += f" ({state['Error']})"
    tail = log_tail(container)
    return f"{what}; its last output: {tail}" if tail else f"{what}; it printed nothing"


def secret_files_tar(secrets: Sequence[SecretMount]) -> bytes:
    """A tar of ``/run/secrets/<name>`` files (mode 0444, as Swarm's secrets), for put_archive."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        parent = ""
        for part in SECRETS_DIR.strip("/").split("/"):
            parent = f"{parent}/{part}".lstrip("/")
            info = tarfile.TarInfo(parent)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for secret in secrets:
            data = (secret.value or "").encode()
            info = tarfile.TarInfo(secret.path.lstrip("/"))
            info.size, info.mode = len(data), 0o444
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class EngineTarget:
    """Start, stop, inspect and list a service's containers; always by digest."""

    kind = "engine"

    def __init__(
        self, client: docker.DockerClient, *, port: int = 8080, log: Callable[[str], None] = print
    ) -> None:
        self._client = client
        self._port = port
        self._log = log

    @property
    def client(self) -> docker.DockerClient:
        return self._client

    def network(self, service: str, environment: str) -> str:
        return ensure_network(self._client, service, environment)

    def instances(
        self, service: str, environment: str, *, include_stopped: bool = False
    ) -> list[Instance]:
        """The service's containers (running ones unless asked), ordered by slot."""
        return Inventory(self._client, port=self._port).instances(
            service, environment, include_stopped=include_stopped
        )

    def container_name(self, release: Release, slot: int) -> str:
        return f"{release.service}-{release.environment}-{slot}-{release.config_id}"

    def start(self, release: Release, slot: int) -> Instance:
        """Run ``release`` in ``slot``; an already running container of it there is reused."""
        import docker.errors

        name = self.container_name(release, slot)
        net = self.network(release.service, release.environment)
        try:
            existing = self._client.containers.get(name)
        except docker.errors.NotFound:
            existing = None
        if existing is not None:
            if existing.status == "running":
                self._log(f"{name} already runs {release.config_id} in slot {slot}")
                return Instance.of_container(existing, release.port)
            existing.remove(force=True)
        self.ensure_image(release)
        self.check(release)
        limits: dict[str, Any] = {}
        if release.limits is not None and release.limits.cpus is not None:
            limits["nano_cpus"] = release.limits.nano_cpus
        if release.limits is not None and release.limits.memory is not None:
            limits["mem_limit"] = release.limits.memory
        # Created, given its secret files and extra networks, then started: the app finds its
        # secrets from its first instruction on.
        container = self._client.containers.create(
            str(release.image),
            command=list(release.command) if release.command else None,
            name=name,
            environment=release.start_env(),
            labels={**release.run_labels(), LABEL_SLOT: str(slot)},
            network=net,
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
            **limits,
        )
        files = [s for s in release.secrets if s.expose == "file" and s.value is not None]
        if files:
            container.put_archive("/", secret_files_tar(files))
        for extra in release.networks:
            self._client.networks.get(extra).connect(container)
        start_container(container, log=self._log)
        container.reload()
        if not container.attrs.get("State", {}).get("Running"):
            why = exit_message(name, container)
            container.remove(force=True)  # its restart policy would start it again
            raise TargetError(f"{why} (it exited as it started, and was removed)")
        self._log(f"started {name} ({release.image.familiar}) in slot {slot}")
        return Instance.of_container(container, release.port)

    def check(self, release: Release) -> None:
        """TargetError unless ``release`` can run here: deployments call it before they change
        anything, :meth:`start` before each container."""
        if any(s.docker_secret for s in release.secrets):
            raise TargetError(
                f"{release.service}/{release.environment}: Docker secrets need a Swarm service "
                "(target swarm); on the engine give the secret's value (file or env)"
            )
        require_networks(self._client, release)

    def start_many(self, release: Release, slots: Sequence[int]) -> list[Instance]:
        """:meth:`start` in each of ``slots``, one after the other."""
        return [self.start(release, slot) for slot in slots]

    def ensure_image(self, release: Release) -> None:
        pull_if_missing(self._client, release, self._log)

    def stop(self, instance: Instance, *, grace: float) -> int | None:
        """Stop (SIGTERM, then SIGKILL after ``grace`` s); the container is kept for a rollback."""
        import docker.errors

        try:
            container = self._client.containers.get(instance.id)
            container.stop(timeout=int(grace))
            container.reload()
        except docker.errors.NotFound:
            return None
        code = container.attrs.get("State", {}).get("ExitCode")
        self._log(f"stopped {instance.name} (exit code {code})")
        return int(code) if code is not None else None

    def restart(self, instance: Instance) -> Instance:
        """Start a stopped container again (the rollback of one slot)."""
        container = self._client.containers.get(instance.id)
        start_container(container, log=self._log)
        container.reload()
        self._log(f"restarted {instance.name}")
        return Instance.of_container(container, instance.port)

    def remove(self, instance: Instance) -> None:
        import docker.errors

        try:
            self._client.containers.get(instance.id).remove(force=True)
        except docker.errors.NotFound:
            return
        self._log(f"removed {instance.name}")

    def remove_many(self, instances: Sequence[Instance], *, grace: float) -> None:
        """Stop (SIGTERM, SIGKILL after ``grace``) and remove instances that take no traffic."""
        for instance in instances:
            self.stop(instance, grace=grace)
            self.remove(instance)

    def remove_slots(
        self, release: Release, slots: Sequence[int] | None = None, *, grace: float
    ) -> None:
        """Remove ``release``'s containers (those started for its group) in ``slots``, or all of
        them, running or not: a start that failed half-way, a variant given up."""
        group = release.labels.get(LABEL_SLOT_GROUP, "")
        for instance in self.instances(release.service, release.environment, include_stopped=True):
            if instance.config != release.config_id:
                continue
            if instance.labels.get(LABEL_SLOT_GROUP, "") != group:
                continue
            if slots is None or instance.slot in slots:
                self.remove_many([instance], grace=grace)

    def exit_reason(self, instance: Instance) -> str | None:
        """None while the container runs (and has not restarted); why it is not running
        otherwise, with its exit code and last output (for health checks)."""
        import docker.errors

        try:
            container = self._client.containers.get(instance.id)
        except docker.errors.NotFound:
            return f"{instance.name} was removed"
        if container.attrs.get("State", {}).get("Running") and not container.attrs.get(
            "RestartCount", 0
        ):
            return None
        return exit_message(instance.name, container)
