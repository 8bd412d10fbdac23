"""Refuse to serve the REST API beyond loopback without a token, unless told to explicitly.

Anyone who reaches an unauthenticated REST API can stop the node, replace its peers or start
jobs on it, so a non-loopback bind with no `MLNODE_API_TOKEN` is a mistake unless the operator
says otherwise (`MLNODE_ALLOW_UNAUTHENTICATED_PUBLIC=1`, e.g. behind a private network).
"""

from __future__ import annotations

import ipaddress

from mlnode.common.settings import NodeSettings


def is_loopback(host: str) -> bool:
    """`host` is a loopback address or `localhost`."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_problem(node: NodeSettings) -> str | None:
    """Why the node must not start as configured, or None."""
    if node.api_token is not None or node.allow_unauthenticated_public or is_loopback(node.host):
        return None
    return (
        f"refusing to serve the REST API on {node.host}:{node.port} without MLNODE_API_TOKEN: "
        "anyone who reaches it could drive this node. Set MLNODE_API_TOKEN (or "
        "MLNODE_API_TOKEN_FILE to have one generated into that file), bind loopback "
        "(MLNODE_HOST=127.0.0.1), or set MLNODE_ALLOW_UNAUTHENTICATED_PUBLIC=1 if the port is "
        "reachable only by your network node."
    )
