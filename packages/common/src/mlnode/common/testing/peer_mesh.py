"""Register every MLNode's public key with every other one, through the REST API only.

What a network node does for its MLNodes, for a local network of nodes (the compose file's init
step): `python -m mlnode.common.testing.peer_mesh node1=http://node1:8080,node1:50051 node2=...`.
Each node's identity comes from `GET /api/v1/identity`; each other node receives it with
`PUT /api/v1/peers/{name}` (`{peer_id, public_key, address, tasks}`), so peers are known by name.
A node that keeps its own token in a file (`MLNODE_API_TOKEN_FILE`) is named with it as a third
part, `name=url,grpc,token_file`; others get `MLNODE_API_TOKEN`, if any.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from mlnode.common.api_token import TokenFileError, read_token
from mlnode.common.settings import NodeSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeshNode:
    """One node: the name peers know it by, its REST base URL and the gRPC address peers dial."""

    name: str
    url: str
    grpc_address: str
    token_file: Path | None = None

    @classmethod
    def parse(cls, spec: str) -> MeshNode:
        """`name=http://host:port,host:grpc_port[,token_file]`."""
        name, sep, rest = spec.partition("=")
        url, comma, rest = rest.partition(",")
        grpc, _, token_file = rest.partition(",")
        if not (sep and comma and name and url.startswith("http") and ":" in grpc):
            raise ValueError(
                f"node spec {spec!r} is not name=http://host:port,host:grpc_port[,token_file]"
            )
        file = Path(token_file) if token_file else None
        return cls(name=name, url=url.rstrip("/"), grpc_address=grpc, token_file=file)

    def headers(self) -> dict[str, str]:
        """The node's own bearer token, when it keeps one in a file that exists (else none)."""
        if self.token_file is None or not self.token_file.exists():
            return {}
        return {"Authorization": f"Bearer {read_token(self.token_file)}"}


def wait_live(client: httpx.Client, nodes: Sequence[MeshNode], timeout_s: float) -> None:
    """Wait until every node answers /livez; TimeoutError naming the ones that did not."""
    deadline = time.monotonic() + timeout_s
    pending = list(nodes)
    while pending:
        pending = [n for n in pending if not _is_live(client, n)]
        if pending and time.monotonic() > deadline:
            names = ", ".join(n.name for n in pending)
            raise TimeoutError(f"not live after {timeout_s:.0f} s: {names}")
        if pending:
            time.sleep(0.5)


def _is_live(client: httpx.Client, node: MeshNode) -> bool:
    try:
        return client.get(f"{node.url}/livez").status_code == 200
    except httpx.HTTPError:
        return False


def register_mesh(
    client: httpx.Client, nodes: Sequence[MeshNode], tasks: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """Tell every node about every other; returns the (registered at, peer) pairs done."""
    keys: dict[str, str] = {}
    for node in nodes:
        answer = client.get(f"{node.url}/api/v1/identity", headers=node.headers())
        answer.raise_for_status()
        keys[node.name] = answer.json()["public_key"]
    done: list[tuple[str, str]] = []
    for target in nodes:
        for peer in nodes:
            if peer.name == target.name:
                continue
            body = {
                "peer_id": peer.name,
                "public_key": keys[peer.name],
                "address": peer.grpc_address,
                "tasks": list(tasks) if tasks else None,  # None: any task
            }
            url = f"{target.url}/api/v1/peers/{peer.name}"
            client.put(url, json=body, headers=target.headers()).raise_for_status()
            done.append((target.name, peer.name))
            log.info("%s now knows %s (%s)", target.name, peer.name, peer.grpc_address)
    return done


def client_for(token: str | None, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """An HTTP client that sends the nodes' bearer token (when they have one) on every request."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(headers=headers, timeout=10, transport=transport)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the compose init step; exit 1 with the reason when a node refuses."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "nodes", nargs="+", help="name=http://host:port,host:grpc_port[,token_file]"
    )
    parser.add_argument(
        "--task", action="append", default=[], help="limit the keys to a task (default: any)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for nodes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        nodes = [MeshNode.parse(spec) for spec in args.nodes]
    except ValueError as exc:
        parser.error(str(exc))
    token = NodeSettings().api_token
    with client_for(token.get_secret_value() if token else None) as client:
        try:
            wait_live(client, nodes, args.timeout)
            pairs = register_mesh(client, nodes, args.task)
        except (httpx.HTTPError, TimeoutError, KeyError, OSError, TokenFileError) as exc:
            log.error("peer registration failed: %s", exc)
            return 1
    log.info("registered %d peer keys across %d nodes", len(pairs), len(nodes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
