"""The engines of a Swarm's nodes, for the one thing only a node's own engine can do.

Everything a delivery reads or changes on a Swarm goes through its manager's API: services,
tasks on every node, their addresses, states and logs. One step cannot: stopping *one* drained
task (a rolling deployment retires old tasks a few at a time, and Swarm has no call that stops a
given task; scaling down lets Swarm choose which). That task's container is stopped through the
engine of the node it runs on, and Swarm, scaled down right after, removes the stopped one.

Which engine serves which node is given with the manager's engine (the ``docker_engine``
connection's extra ``swarm_nodes``: ``{"<node address, hostname or id>": "<conn_id>"}``, see
:mod:`docker_delivery.hooks.engine`), attached to its client with :func:`attach_nodes`. A task on
the manager's own node needs none; a task on a node without one gets a clear error before it is
drained, naming the node.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from docker_delivery.errors import TargetError

if TYPE_CHECKING:
    import docker

__all__ = ["NodeEngines", "attach_nodes", "nodes_of"]


class NodeEngines:
    """Engines of a Swarm's nodes, by node address (``Status.Addr``), hostname or node id; each
    client made on first use by its factory and closed with :meth:`close`."""

    def __init__(self, factories: Mapping[str, Callable[[], docker.DockerClient]]) -> None:
        self._factories = dict(factories)
        self._clients: dict[str, docker.DockerClient] = {}

    def __repr__(self) -> str:
        return f"NodeEngines({sorted(self._factories)})"

    @property
    def keys(self) -> list[str]:
        return sorted(self._factories)

    def key_for(self, node: Mapping[str, Any]) -> str | None:
        """The key naming ``node`` (as the Swarm API describes it): its id, address or hostname;
        a hostname shared by several nodes names none of them."""
        addr = (node.get("Status") or {}).get("Addr", "")
        hostname = (node.get("Description") or {}).get("Hostname", "")
        for key in (str(node.get("ID", "")), str(addr), str(hostname)):
            if key and key in self._factories:
                return key
        return None

    def client(self, key: str) -> docker.DockerClient:
        if key not in self._clients:
            self._clients[key] = self._factories[key]()
        return self._clients[key]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


_ATTACHED: weakref.WeakKeyDictionary[Any, NodeEngines] = weakref.WeakKeyDictionary()


def attach_nodes(manager: docker.DockerClient, nodes: NodeEngines) -> docker.DockerClient:
    """``manager``, with the engines of its Swarm's nodes (closed when ``manager`` is closed)."""
    _ATTACHED[manager] = nodes
    close = manager.close

    def close_all() -> None:
        try:
            nodes.close()
        finally:
            close()

    manager.close = close_all
    return manager


def nodes_of(manager: docker.DockerClient) -> NodeEngines | None:
    return _ATTACHED.get(manager)


def node_engine(manager: docker.DockerClient, node_id: str, *, what: str) -> docker.DockerClient:
    """The engine of the Swarm node ``node_id``, to act on ``what`` there: the manager's own
    for its own node (or when the node is not known), else the one attached for that node."""
    import docker.errors

    own = (manager.info().get("Swarm") or {}).get("NodeID", "")
    if not node_id or node_id == own:
        return manager
    try:
        node = manager.api.inspect_node(node_id)
    except docker.errors.NotFound:
        raise TargetError(f"{what} ran on node {node_id}, which has left the Swarm") from None
    nodes = nodes_of(manager)
    key = nodes.key_for(node) if nodes is not None else None
    if key is None:
        raise TargetError(f"{what} runs on {describe_node(node)}: {NEEDS_NODE_ENGINE}")
    assert nodes is not None
    hostname = (node.get("Description") or {}).get("Hostname")
    if key == hostname and len(manager.nodes.list(filters={"name": hostname})) > 1:
        raise TargetError(
            f"swarm_nodes names {hostname!r}, a hostname several nodes of the Swarm share: "
            "name each node by its address or id"
        )
    return nodes.client(key)


NEEDS_NODE_ENGINE = (
    "stopping one task there needs that node's engine (Swarm has no call that stops a given "
    'task): add it to the manager\'s engine connection, extra swarm_nodes: {"<node address>": '
    '"<its docker_engine connection>"}'
)


def describe_node(node: Mapping[str, Any]) -> str:
    addr = (node.get("Status") or {}).get("Addr", "?")
    hostname = (node.get("Description") or {}).get("Hostname", "?")
    return f"node {hostname} (address {addr}, id {node.get('ID', '?')[:12]})"


def nodes_without_engine(manager: docker.DockerClient, node_ids: set[str]) -> list[str]:
    """Of the nodes ``node_ids``, those (described) whose engine this manager cannot reach:
    neither its own node nor one attached."""
    own = (manager.info().get("Swarm") or {}).get("NodeID", "")
    nodes = nodes_of(manager)
    missing = []
    for node_id in sorted(node_ids - {own, ""}):
        node = manager.api.inspect_node(node_id)
        if nodes is None or nodes.key_for(node) is None:
            missing.append(describe_node(node))
    return missing
