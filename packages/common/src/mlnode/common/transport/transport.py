"""`GrpcTransport`: the node's `TensorTransport` over signed gRPC streams.

It owns the node's identity and known peers (loaded from the state dir on `start`), the gRPC
server on the transport port, one channel per peer address, the inbox of pushed tensors and the
providers served to pulling peers. Every method blocks and is thread-safe.
"""

from __future__ import annotations

import logging
import resource
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import torch

from mlnode.common.errors import PeerUnknown
from mlnode.common.state_dir import ensure_private_dir
from mlnode.common.transport.api import ReceivedTensors, TensorLike, TensorMeta, TensorProvider
from mlnode.common.transport.auth import Identity
from mlnode.common.transport.client import CallTimeouts, PeerClient
from mlnode.common.transport.errors import PeerUnreachable, SessionRevoked, TransportClosed
from mlnode.common.transport.framing import MAX_CHUNK_BYTES, Limits
from mlnode.common.transport.handlers import Providers, ServerHandlers
from mlnode.common.transport.handshake import ServerHandshake
from mlnode.common.transport.identity import KEY_FILE, load_or_create_identity
from mlnode.common.transport.inbox import Inbox
from mlnode.common.transport.interceptors import AuthInterceptor
from mlnode.common.transport.peers import PEERS_FILE, KnownPeers
from mlnode.common.transport.push_stream import PushStreams
from mlnode.common.transport.servicer import TransportServicer, add_servicer
from mlnode.common.transport.settings import TransportSettings
from mlnode.common.transport.watchdog import PeerSlots, Watchdog

log = logging.getLogger(__name__)


def channel_options(settings: TransportSettings) -> list[tuple[str, int]]:
    """Options of both gRPC ends: messages fit a full chunk or the largest header.

    BDP probing (gRPC's default, named so it stays on) grows the flow-control windows to the
    link: through a 150 ms, 100 Mbit/s relay it fills the link for 16 MiB pushes. A fixed larger
    stream window (`grpc.http2.lookahead_bytes`) also speeds 1 MiB pushes there, but is not set:
    it would let any caller make the server buffer that much per stream before its proof is
    checked (README, "Training across the internet").
    """
    largest = max(MAX_CHUNK_BYTES, settings.max_header_bytes) + 64 * 1024
    return [
        ("grpc.max_receive_message_length", largest),
        ("grpc.max_send_message_length", largest),
        ("grpc.http2.bdp_probe", 1),
    ]


def connection_quota(wanted: int, spare: int = 512) -> int:
    """Connections the server may accept: `wanted`, unless the open-file limit leaves fewer.

    The limit is raised as far as allowed first; `spare` descriptors stay free for files, the
    REST API and outgoing calls, so a connection flood never starves them.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + spare if hard == resource.RLIM_INFINITY else min(wanted + spare, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    quota = max(64, min(wanted, soft - spare))
    if quota < wanted:
        log.warning(
            "open-file limit %d allows %d transport connections, not MLNODE_GRPC_MAX_CONNECTIONS "
            "%d; raise 'ulimit -n'",
            soft,
            quota,
            wanted,
        )
    return quota


def server_options(settings: TransportSettings) -> list[tuple[str, int]]:
    """Server limits on connections: counts, set-up time, idleness, streams, keepalive."""

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    return [
        *channel_options(settings),
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ("grpc.max_allowed_incoming_connections", connection_quota(settings.max_connections)),
        ("grpc.server_handshake_timeout_ms", ms(settings.connect_timeout_s)),
        ("grpc.max_connection_idle_ms", ms(settings.connection_idle_s)),
        ("grpc.keepalive_time_ms", ms(settings.keepalive_s)),
        ("grpc.keepalive_timeout_ms", ms(min(settings.keepalive_s, 20.0))),
        ("grpc.http2.max_ping_strikes", 2),
    ]


class GrpcTransport:
    """Push, receive and pull named tensors between known peers."""

    def __init__(
        self,
        settings: TransportSettings,
        state_dir: Path | None = None,
        *,
        identity: Identity | None = None,
        peers: KnownPeers | None = None,
    ) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self._identity = identity
        self._peers = peers
        self.inbox = Inbox(settings.inbox_limits())
        self.watchdog = Watchdog()
        self.watchdog.every(1.0, self.inbox.expire)
        self.streams = PushStreams(settings.stream_bounds())
        self.watchdog.every(0.5, self.streams.close_idle)
        self.providers = Providers()
        self.limits = Limits(
            settings.max_tensor_bytes, settings.max_tensors, settings.max_header_bytes
        )
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._calls: dict[str, threading.BoundedSemaphore] = {}
        #: peer id -> its client, reused (stubs, handshakes made ahead) while the peer is unchanged
        self._clients: dict[str, PeerClient] = {}
        self._server: grpc.Server | None = None
        self._fast_pool: ThreadPoolExecutor | None = None
        self.handlers: ServerHandlers | None = None
        self.port: int | None = None

    @property
    def identity(self) -> Identity:
        """This node's key pair (loaded by `start`)."""
        if self._identity is None:
            raise TransportClosed("the transport is not started")
        return self._identity

    @property
    def peers(self) -> KnownPeers:
        """The known peers (loaded by `start`)."""
        if self._peers is None:
            raise TransportClosed("the transport is not started")
        return self._peers

    @property
    def running(self) -> bool:
        """True while the server listens."""
        return self._server is not None

    def start(self) -> None:
        """Load identity and peers (from the state dir unless injected) and start serving."""
        if self._server is not None:
            return
        if self._identity is None or self._peers is None:
            if self.state_dir is None:
                raise ValueError("a state dir, or both identity and peers, are needed")
            ensure_private_dir(self.state_dir, (KEY_FILE, PEERS_FILE))
            self._identity = self._identity or load_or_create_identity(self.state_dir / KEY_FILE)
            self._peers = self._peers or KnownPeers(self.state_dir / PEERS_FILE)
        handshake = ServerHandshake(self.identity, self.peers, self.settings.challenge_ttl_s)
        self.handlers = ServerHandlers(
            self.identity,
            self.peers,
            self.inbox,
            self.providers,
            self.limits,
            self.settings.chunk_bytes,
        )
        slots = PeerSlots(
            self.settings.max_calls_per_peer, self.settings.workers, self.settings.reserved()
        )
        self._fast_pool = ThreadPoolExecutor(
            self.settings.handshake_workers, thread_name_prefix="transport-hello"
        )
        server = grpc.server(
            ThreadPoolExecutor(self.settings.workers, thread_name_prefix="transport"),
            interceptors=[AuthInterceptor(handshake, self._fast_pool, slots)],
            options=server_options(self.settings),
        )
        servicer = TransportServicer(
            handshake,
            self.handlers,
            self.watchdog,
            self.settings.idle_timeout_s,
            self.settings.rpc_timeout_s,
            (self.settings.min_bytes_per_s, self.settings.rate_window_s),
            self.settings.stream_bounds(),
        )
        add_servicer(servicer, server, push_streams=self.settings.stream_pushes > 0)
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise RuntimeError(f"cannot listen on {address} (MLNODE_GRPC_PORT): {exc}") from exc
        self.watchdog.start()
        server.start()
        self._server = server
        log.info("tensor transport on port %d as %s", self.port, self.identity.fingerprint)

    def stop(self) -> None:
        """Stop serving (open calls get the grace period) and close every channel."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(self.settings.shutdown_grace_s).wait(self.settings.shutdown_grace_s + 1)
        self.streams.close_all()
        self.watchdog.stop()
        if self._fast_pool is not None:
            self._fast_pool.shutdown(wait=False, cancel_futures=True)
            self._fast_pool = None
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
            self._clients = {}
        for channel in channels:
            channel.close()

    def _client(self, peer_id: str) -> PeerClient:
        peer = self.peers.get(peer_id)
        if peer is None:
            raise PeerUnknown(f"peer {peer_id!r} is not a known peer")
        if peer.address is None:
            raise PeerUnreachable(f"peer {peer_id!r} has no address")
        self.watchdog.start()  # also for a node that only calls: it watches cancellations
        with self._lock:
            known = self._clients.get(peer_id)
            if known is not None and known.peer == peer:
                return known
            channel = self._channels.get(peer.address)
            if channel is None:
                channel = grpc.insecure_channel(peer.address, channel_options(self.settings))
                self._channels[peer.address] = channel
        # A handshake made ahead is used for half the server's challenge lifetime (same settings).
        timeouts = CallTimeouts(
            self.settings.handshake_timeout_s,
            self.settings.rpc_timeout_s,
            self.settings.challenge_ttl_s / 2,
        )

        def alive() -> None:
            if self.peers.get(peer_id) != peer:
                raise SessionRevoked(f"peer {peer_id} was removed or changed during the call")

        client = PeerClient(
            channel,
            self.identity,
            peer,
            self.limits,
            self.settings.chunk_bytes,
            timeouts,
            alive,
            self.watchdog,
        )
        with self._lock:
            # Only clients of peers still known as they were: at most one per known peer.
            kept = {k: c for k, c in self._clients.items() if self.peers.get(k) == c.peer}
            self._clients = kept | {peer_id: client}
        return client

    def _permits(self, peer_id: str) -> threading.BoundedSemaphore:
        with self._lock:
            return self._calls.setdefault(
                peer_id, threading.BoundedSemaphore(self.settings.max_calls_per_peer)
            )

    @contextmanager
    def _call_slot(self, peer_id: str) -> Iterator[None]:
        """At most `max_calls_per_peer` calls to one peer; more wait instead of being refused.

        That is what the peer's server admits, when it has the same settings. An open push
        stream is one of them.
        """
        with self._permits(peer_id):
            yield

    def send(self, peer_id: str, tensors: Mapping[str, TensorLike], task: str, tag: str) -> None:
        """Deliver tensors to a peer's inbox under (task, tag); raises on refusal or failure.

        On the peer's push stream when it is free (one handshake for many pushes), else as a
        single push.
        """
        client = self._client(peer_id)
        if self.settings.stream_pushes > 0:
            slot = self.streams.slot(peer_id, self._permits(peer_id))
            bounds = self.streams.bounds
            if client.send_streamed(slot, tensors, task, tag, bounds) is not None:
                return
        with self._call_slot(peer_id):
            client.send(tensors, task, tag)

    def receive(
        self, task: str, tag: str, from_peers: Collection[str], timeout: float
    ) -> ReceivedTensors:
        """What `from_peers` pushed under (task, tag) by `timeout`; late peers are absent."""
        return self.inbox.take(task, tag, from_peers, timeout)

    def discard(self, task: str) -> None:
        """Drop every delivery of `task` nobody took (its job ended); not part of the protocol."""
        self.inbox.discard(task)

    def serve(self, task: str, provider: TensorProvider) -> None:
        """Offer a provider's tensors to known peers of `task`."""
        self.providers.set(task, provider)

    def unserve(self, task: str) -> None:
        """Stop offering tensors for `task`."""
        self.providers.remove(task)

    def list_tensors(
        self, peer_id: str, task: str, *, timeout: float | None = None
    ) -> list[TensorMeta]:
        """What a peer offers for `task` (within `timeout` seconds, else the RPC timeout)."""
        with self._call_slot(peer_id):
            return self._client(peer_id).list_tensors(task, timeout)

    def fetch(
        self,
        peer_id: str,
        task: str,
        names: Sequence[str],
        *,
        expected: Mapping[str, TensorMeta] | None = None,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, torch.Tensor]:
        """Pull named tensors from a peer's provider for `task`.

        `expected` (e.g. the peer's listing): each tensor must have that dtype and shape, checked
        on its header before anything is allocated. `timeout`: deadline of the whole call.
        `cancel`: set it to end the call at once (FetchCancelled).
        """
        with self._call_slot(peer_id):
            return self._client(peer_id).fetch(task, names, expected, timeout, cancel)
