"""Hostile clients of the tensor transport, for the hardening tests and the soak benchmark.

`Flood` holds many raw TCP connections against a gRPC port: idle ones (nothing sent) and
half-open calls (the HTTP/2 preface and one call's headers, never its message), reopening those
the server closes. It speaks just enough HTTP/2 by hand (literal HPACK headers, no Huffman), so
ten thousand connections cost one thread. `HostileClient` speaks the real protocol with a key,
for what a registered peer could do: idle calls, inbox floods, malformed headers.
"""

from __future__ import annotations

import base64
import selectors
import socket
import threading
import time
from collections.abc import Iterator, Sequence

import grpc
import torch

from mlnode.common.transport import wire
from mlnode.common.transport._gen import tensor_pb2 as pb
from mlnode.common.transport.auth import Identity
from mlnode.common.transport.client import CallTimeouts, PeerClient
from mlnode.common.transport.codec import encode
from mlnode.common.transport.framing import Limits, write_frames
from mlnode.common.transport.interceptors import CLIENT_NONCE_MD, KEY_MD, PUSH, TASK_MD
from mlnode.common.transport.peers import Peer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
Metadata = Sequence[tuple[str, str | bytes]]


def _hpack_int(value: int, prefix_bits: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((value,))
    out = bytearray((limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: str, value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode()
    if name.endswith("-bin"):
        raw = base64.b64encode(raw).rstrip(b"=")
    key = name.encode()
    return b"\x00" + _hpack_int(len(key), 7) + key + _hpack_int(len(raw), 7) + raw


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload
    )


def half_open_call(authority: str, method: str, metadata: Metadata = ()) -> bytes:
    """Bytes that open a connection and one gRPC call whose request message never comes."""
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", method),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *metadata,
    ]
    block = b"".join(_literal(name, value) for name, value in headers)
    settings, settings_ack, headers_end = 0x4, 0x1, 0x4
    return (
        PREFACE
        + _frame(settings, 0, 0, b"")
        + _frame(settings, settings_ack, 0, b"")
        + _frame(0x1, headers_end, 1, block)
    )


def hello_metadata(key: bytes, task: str) -> Metadata:
    """A Hello's metadata naming `key` (known or not) for `task`."""
    return ((KEY_MD, key), (TASK_MD, task), (CLIENT_NONCE_MD, b"\x01" * 32))


class Flood:
    """Holds `count` connections to `address`; `payload` None keeps them idle (nothing sent)."""

    def __init__(self, address: str, count: int, payload: bytes | None = None) -> None:
        host, port = address.rsplit(":", 1)
        self.target = (host, int(port))
        self.count = count
        self.payload = payload
        self.opened = 0
        self.closed_by_server = 0
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)

    def start(self) -> Flood:
        """Open the connections (in the background) and keep them open."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close every connection."""
        self._stop.set()
        self._thread.join(30)

    @property
    def open_now(self) -> int:
        """Connections held at the moment."""
        return len(self._selector.get_map() or {})

    def _open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(self.target)
        self._selector.register(
            sock, selectors.EVENT_WRITE if self.payload else selectors.EVENT_READ
        )
        self.opened += 1

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for _ in range(min(200, self.count - self.open_now)):
                    self._open()
                for key, events in self._selector.select(0.05):
                    self._serve(key.fileobj, events)  # type: ignore[arg-type]
        finally:
            for key in list((self._selector.get_map() or {}).values()):
                key.fileobj.close()  # type: ignore[union-attr]
            self._selector.close()

    def _serve(self, sock: socket.socket, events: int) -> None:
        try:
            if events & selectors.EVENT_WRITE:
                sock.sendall(self.payload or b"")
                self._selector.modify(sock, selectors.EVENT_READ)
                return
            if sock.recv(65536):  # the server's settings, trailers, pings: read and ignore
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._selector.unregister(sock)
        sock.close()
        self.closed_by_server += 1


class HostileClient:
    """A peer with a key, speaking the protocol itself so that it can misuse it on purpose."""

    def __init__(self, address: str, server_key: bytes, identity: Identity, task: str) -> None:
        self.identity = identity
        self.task = task
        self.channel = grpc.insecure_channel(address)
        self._release = threading.Event()
        self.last_details: str | None = None
        peer = Peer("target", server_key, address)
        self.client = PeerClient(
            self.channel,
            identity,
            peer,
            Limits(1 << 34, 100_000, 65536),
            4 << 20,
            CallTimeouts(10, 60),
        )
        self._push = self.channel.stream_unary(
            PUSH, request_serializer=wire.serialize, response_deserializer=pb.PushReply.FromString
        )

    def _held(self) -> Iterator[bytes]:
        self._release.wait()
        yield from ()

    def half_open(self, method: str, metadata: Metadata) -> grpc.Future:
        """A call that sends its headers and then nothing until `close`."""
        call = self.channel.stream_unary(method)
        future: grpc.Future = call.future(self._held(), metadata=tuple(metadata))
        return future

    def idle_session(self, method: str = PUSH) -> grpc.Future:
        """An authenticated call (valid proof) that never sends a frame."""
        _, metadata = self.client.handshake(self.task, method)
        return self.half_open(method, metadata)

    def push(self, tensors: dict[str, torch.Tensor], tag: str) -> grpc.StatusCode:
        """A well-formed push in a fresh session; its status code."""
        session, metadata = self.client.handshake(self.task, PUSH)
        frames = write_frames(
            (encode(n, t) for n, t in tensors.items()),
            session=session,
            signer=self.identity,
            task=self.task,
            tag=tag,
            chunk_bytes=4 << 20,
        )
        return self._send(frames, metadata)

    def push_header(self, header: pb.TensorHeader) -> grpc.StatusCode:
        """A fresh session whose stream is one raw (e.g. absurd) header frame."""
        _, metadata = self.client.handshake(self.task, PUSH)
        return self._send(iter([pb.Frame(header=header.SerializeToString())]), metadata)

    def drip(self, every_s: float, nbytes: int = 4096) -> grpc.StatusCode:
        """A well-formed push in a fresh session, sent one 1-byte chunk every `every_s`.

        Each frame comes before the idle deadline, so only a floor on the rate ends the call.
        """
        session, metadata = self.client.handshake(self.task, PUSH)
        frames = write_frames(
            (encode("drip", torch.zeros(nbytes // 4)),),
            session=session,
            signer=self.identity,
            task=self.task,
            tag="drip",
            chunk_bytes=1,
        )

        def slowly() -> Iterator[wire.WireFrame]:
            for frame in frames:
                yield frame
                if self._release.wait(every_s):
                    return

        return self._send(slowly(), metadata)

    def _send(self, frames: Iterator[wire.WireFrame], metadata: Metadata) -> grpc.StatusCode:
        try:
            self._push(frames, metadata=tuple(metadata), timeout=60)
        except grpc.RpcError as exc:
            self.last_details = exc.details()
            code: grpc.StatusCode = exc.code()
            return code
        return grpc.StatusCode.OK

    def close(self) -> None:
        """End every held call and the channel."""
        self._release.set()
        time.sleep(0.1)
        self.channel.close()
