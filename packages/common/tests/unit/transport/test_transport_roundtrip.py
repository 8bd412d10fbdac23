import threading
import time
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from mlnode.common.errors import PeerUnknown
from mlnode.common.testing import DictProvider, free_port, wait_until
from mlnode.common.transport import wire
from mlnode.common.transport.api import TensorMeta
from mlnode.common.transport.client import PreparedHandshake
from mlnode.common.transport.codec import DTYPES, encode
from mlnode.common.transport.errors import (
    LimitExceeded,
    NotOffered,
    PeerUnreachable,
    SessionRevoked,
)
from mlnode.common.transport.framing import write_frames
from mlnode.common.transport.inbox_budget import TENSOR_OVERHEAD
from mlnode.common.transport.interceptors import NONCE_MD, PUSH
from mlnode.common.transport.peers import Peer

from .conftest import Pair, make_transport


def every_kind() -> dict[str, torch.Tensor | np.ndarray]:
    tensors: dict[str, torch.Tensor | np.ndarray] = {}
    for name, d in DTYPES.items():
        base = torch.arange(-30, 30).reshape(6, 10)
        tensor = (base % 2 == 0) if d.torch_dtype is torch.bool else base.to(d.torch_dtype)
        tensors[name] = tensor
        tensors[f"{name}-scalar"] = tensor[1, 1].clone()
        tensors[f"{name}-empty"] = tensor[:0]
        tensors[f"{name}-strided"] = tensor.t()[::3]
    tensors["bf16-bits"] = torch.randint(-(2**15), 2**15, (999,), dtype=torch.int16).view(
        torch.bfloat16
    )
    tensors["numpy-int32"] = np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2]
    tensors["big"] = torch.randn(300_000)  # several 64 KiB chunks
    return tensors


def as_torch(t: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(t)) if isinstance(t, np.ndarray) else t


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes, so NaN payloads compare bit for bit."""
    return t.contiguous().reshape(-1).view(torch.uint8)


def test_push_round_trip_of_every_dtype_and_shape(pair: Pair) -> None:
    sent = every_kind()
    pair.alice.send("bob", sent, "t", "round-1")
    got = pair.bob.receive("t", "round-1", ["alice"], timeout=10)
    assert list(got) == ["alice"] and list(got["alice"]) == list(sent)
    for name, tensor in sent.items():
        expected = as_torch(tensor)
        out = got["alice"][name]
        assert out.dtype == expected.dtype and out.shape == expected.shape, name
        assert torch.equal(bits(out), bits(expected)), name


def test_receive_returns_only_what_arrived_by_the_deadline(pair: Pair) -> None:
    pair.alice.send("bob", {"x": torch.ones(2)}, "t", "r")
    start = time.monotonic()
    got = pair.bob.receive("t", "r", ["alice", "carol"], timeout=0.3)
    assert set(got) == {"alice"} and time.monotonic() - start >= 0.3
    assert pair.bob.receive("t", "r", ["alice"], timeout=0) == {}  # taken once


def test_receive_wakes_when_the_last_peer_delivers(pair: Pair) -> None:
    result: dict[str, object] = {}
    waiter = threading.Thread(
        target=lambda: result.update(pair.bob.receive("t", "late", ["alice"], timeout=30))
    )
    waiter.start()
    time.sleep(0.1)
    pair.alice.send("bob", {"x": torch.ones(2)}, "t", "late")
    waiter.join(10)
    assert not waiter.is_alive() and set(result) == {"alice"}


def test_list_and_fetch_from_a_provider(pair: Pair) -> None:
    # bob serves, alice pulls: alice must know bob and bob must accept alice for the task
    weights = {"w": torch.randn(64, 64), "b": torch.randn(64).to(torch.bfloat16)}
    pair.bob.serve("t", DictProvider(weights))
    metas = pair.alice.list_tensors("bob", "t")
    assert metas == [
        TensorMeta("w", torch.float32, (64, 64)),
        TensorMeta("b", torch.bfloat16, (64,)),
    ]
    got = pair.alice.fetch("bob", "t", ["b", "w"])
    assert list(got) == ["b", "w"] and all(torch.equal(got[k], weights[k]) for k in got)
    with pytest.raises(NotOffered):
        pair.alice.fetch("bob", "t", ["nope"])
    pair.bob.unserve("t")
    with pytest.raises(NotOffered):
        pair.alice.list_tensors("bob", "t")


def test_limits_give_clear_errors(pair: Pair) -> None:
    with pytest.raises(LimitExceeded, match="MAX_TENSOR_BYTES"):
        pair.alice.send("bob", {"x": torch.zeros(9 << 20)}, "t", "r")  # 36 MiB > 32 MiB
    with pytest.raises(LimitExceeded, match="MAX_TENSORS"):
        pair.alice.send("bob", {f"x{i}": torch.zeros(1) for i in range(65)}, "t", "r")
    with pytest.raises(LimitExceeded, match="cannot be sent"):
        pair.alice.send("bob", {"x": torch.zeros(1, dtype=torch.float64)}, "t", "r")
    assert pair.bob.inbox.pending() == []


def test_unknown_or_unreachable_peers(pair: Pair) -> None:
    with pytest.raises(PeerUnknown):
        pair.alice.send("nobody", {"x": torch.zeros(1)}, "t", "r")
    pair.alice.peers.put(Peer("silent", b"\1" * 32))
    with pytest.raises(PeerUnreachable, match="no address"):
        pair.alice.send("silent", {"x": torch.zeros(1)}, "t", "r")


def test_inbox_budget_refuses_a_push_and_delivers_nothing() -> None:
    alice = make_transport()
    bob = make_transport(max_inbox_bytes=1 << 20, max_inbox_peer_bytes=1 << 20)
    try:
        alice.peers.put(Peer("bob", bob.identity.public_key, f"127.0.0.1:{bob.port}"))
        bob.peers.put(Peer("alice", alice.identity.public_key))
        alice.send("bob", {"x": torch.zeros(100_000)}, "t", "r1")  # 400 kB fits
        with pytest.raises(LimitExceeded, match="MAX_INBOX_PEER_BYTES"):
            alice.send("bob", {"y": torch.zeros(200_000)}, "t", "r2")  # 800 kB more does not
        assert [tag for _, tag, _, _ in bob.inbox.pending()] == ["r1"]
        assert bob.inbox.held_bytes == 400_000 + TENSOR_OVERHEAD
    finally:
        alice.stop()
        bob.stop()


def test_local_removal_stops_a_fetch_in_progress(pair: Pair) -> None:
    class SlowProvider(DictProvider):
        def get(self, name: str) -> torch.Tensor:
            if name == "second":
                pair.alice.peers.remove("bob")  # alice forgets bob while pulling from him
            return super().get(name)

    pair.bob.serve("t", SlowProvider({"first": torch.ones(10), "second": torch.ones(10)}))
    with pytest.raises(SessionRevoked):
        pair.alice.fetch("bob", "t", ["first", "second"])


def test_a_client_that_vanishes_mid_push_leaves_the_server_up(pair: Pair) -> None:
    client = pair.alice._client("bob")
    session, metadata = client.handshake("t", PUSH)
    frames = write_frames(
        [encode("x", torch.zeros(100_000))],
        session=session,
        signer=pair.alice.identity,
        task="t",
        tag="gone",
        chunk_bytes=4096,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{pair.bob.port}")
    call = channel.stream_unary(PUSH, request_serializer=wire.serialize).future(
        (f for i, f in enumerate(frames) if i < 20), metadata=metadata
    )
    call.cancel()
    channel.close()
    pair.alice.send("bob", {"ok": torch.ones(1)}, "t", "after")
    assert set(pair.bob.receive("t", "after", ["alice"], timeout=10)) == {"alice"}
    assert pair.bob.receive("t", "gone", ["alice"], timeout=0) == {}


def test_concurrent_sends_from_many_threads(pair: Pair) -> None:
    errors: list[BaseException] = []

    def push(i: int) -> None:
        try:
            pair.alice.send("bob", {"x": torch.full((50_000,), float(i))}, "t", f"c{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    for i in range(6):
        got = pair.bob.receive("t", f"c{i}", ["alice"], timeout=5)
        assert torch.equal(got["alice"]["x"], torch.full((50_000,), float(i)))


def test_peer_at_a_closed_port_is_unreachable(pair: Pair) -> None:
    pair.alice.peers.put(Peer("gone", b"\2" * 32, f"127.0.0.1:{free_port()}"))
    with pytest.raises(PeerUnreachable, match="UNAVAILABLE"):
        pair.alice.send("gone", {"x": torch.ones(1)}, "t", "r")


def _ready_handshake(pair: Pair) -> PreparedHandshake:
    client = pair.alice._client("bob")
    wait_until(lambda: "t" in client._ready, timeout_s=10, what="a handshake made ahead")
    return client._ready["t"]


def test_pushes_use_the_handshake_made_ahead(single_pushes: Pair) -> None:
    pair = single_pushes
    client = pair.alice._client("bob")
    pair.alice.send("bob", {"x": torch.ones(3)}, "t", "a")
    ahead = _ready_handshake(pair)
    inline = []
    real = client.handshake

    def counted(task: str, method: str, timeout: float | None = None) -> tuple[bytes, Any]:
        inline.append(threading.current_thread().name)
        return real(task, method, timeout)

    client.handshake = counted  # type: ignore[method-assign]
    pair.alice.send("bob", {"x": torch.full((3,), 2.0)}, "t", "b")

    assert pair.alice._client("bob") is client
    assert torch.equal(
        pair.bob.receive("t", "b", ["alice"], 5)["alice"]["x"], torch.full((3,), 2.0)
    )
    assert _ready_handshake(pair) is not ahead  # used once, and the next one made
    assert inline and all(name == "transport-handshake-ahead" for name in inline)


def test_a_handshake_ahead_the_peer_forgot_falls_back_to_a_fresh_one(single_pushes: Pair) -> None:
    pair = single_pushes
    client = pair.alice._client("bob")
    pair.alice.send("bob", {"x": torch.ones(3)}, "t", "a")
    ahead = _ready_handshake(pair)
    # A challenge the peer never issued (as after its restart, or once its TTL passed).
    forged = dict(ahead.metadata) | {NONCE_MD: bytes(len(dict(ahead.metadata)[NONCE_MD]))}
    client._ready["t"] = PreparedHandshake(ahead.session, tuple(forged.items()), time.monotonic())

    pair.alice.send("bob", {"x": torch.full((3,), 5.0)}, "t", "b")

    got = pair.bob.receive("t", "b", ["alice"], 5)
    assert torch.equal(got["alice"]["x"], torch.full((3,), 5.0))
    assert pair.bob.receive("t", "b", ["alice"], 0.5) == {}  # delivered once


def test_a_stale_handshake_ahead_is_not_used(single_pushes: Pair) -> None:
    pair = single_pushes
    client = pair.alice._client("bob")
    pair.alice.send("bob", {"x": torch.ones(3)}, "t", "a")
    ahead = _ready_handshake(pair)
    client._ready["t"] = PreparedHandshake(ahead.session, ahead.metadata, time.monotonic() - 3600)

    assert client._take_ready("t") is None
