"""Connecting to a Ray cluster and finding the nodes that carry a target's resource."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from edgemed_runtime.sdk import resource_name

from ..errors import InvalidInputError, MissingDependencyError


def import_ray() -> Any:
    """``ray``, or MissingDependencyError (code ``missing-ray``) naming the extra."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("Ray is not installed", expected="ray (the edgemed[ray] "
                                     "extra)", found="no module named ray",
                                     fix="pip install 'edgemed[ray]' -c constraints.txt",
                                     code="missing-ray") from None
    return ray


def connect(address: str) -> Any:
    """Join the cluster at ``address`` (``host:port`` or ``auto``) as a driver, once per process.

    Returns the ``ray`` module. Raises InvalidInputError (code ``ray-unreachable``) when no
    cluster answers there.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _probe(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError from Ray
        raise InvalidInputError(
            "cannot join the Ray cluster", expected="the head's host:port (ray start --head) "
            "or auto", found=f"{address}: {type(exc).__name__}: "
            f"{(str(exc).splitlines() or [''])[0]}"[:300],
            fix="start the head with ray start --head, or check the address and the firewall",
            code="ray-unreachable") from None
    return ray


def _probe(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast (``ray-unreachable``) when nothing listens at ``host:port`` (Ray itself retries
    for minutes); ``auto`` and other forms are left to Ray."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise InvalidInputError(
            "cannot join the Ray cluster", expected="the head's host:port (ray start --head) "
            "or auto", found=f"{address}: {exc.strerror or type(exc).__name__}",
            fix="start the head with ray start --head, or check the address and the firewall",
            code="ray-unreachable") from None


def nodes_with(target: str) -> list[dict[str, Any]]:
    """The alive nodes carrying ``target:<target>``: ``[{node_id, address, resources}]``."""
    ray = import_ray()
    res = resource_name(target)
    return [{"node_id": n["NodeID"], "address": n.get("NodeManagerAddress"),
             "resources": dict(n.get("Resources", {}))}
            for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(res, 0) > 0]


def require_target(target: str, *, wait_s: float = 0.0) -> list[dict[str, Any]]:
    """The nodes with ``target``'s resource, waiting up to ``wait_s`` seconds for one to join.

    Raises:
        InvalidInputError: none joined in time (code ``no-target-node``).
    """
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        nodes = nodes_with(target)
        if nodes or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    if not nodes:
        raise InvalidInputError(
            f"no device in the cluster carries the resource {resource_name(target)}",
            expected=f"a node started by edgemed-run agent on a {target} device",
            found=f"none after {wait_s:.0f} s", code="no-target-node",
            fix=f"on the device: edgemed-run agent --ray HEAD:PORT --targets DIR (it must match "
            f"{target}'s host rules), or raise the wait")
    return nodes
