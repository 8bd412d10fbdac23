"""Operator checks of the transport: probe a peer with a real signed send, look into the inbox."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
from blake3 import blake3

from mlnode.common.transport.api import TensorLike, TensorTransport
from mlnode.common.transport.codec import encode
from mlnode.common.transport.inbox import Inbox

PROBE_TENSOR = "probe"


def tensor_digest(tensor: TensorLike) -> str:
    """BLAKE3 hex digest of a tensor's wire bytes (what the trailer's digest covers)."""
    return blake3(encode("t", tensor).payload).hexdigest()


@dataclass(frozen=True)
class ProbeReport:
    """What a probe sent and how long the signed send took."""

    nbytes: int
    digest: str
    seconds: float


def probe_peer(
    transport: TensorTransport, peer_id: str, task: str, tag: str, nbytes: int
) -> ProbeReport:
    """Send `nbytes` random bytes as tensor `probe` to a peer's inbox under (task, tag)."""
    data = bytearray(os.urandom(nbytes))
    # torch.frombuffer refuses an empty buffer; a 0-byte probe is still a valid check of the path.
    tensor = (
        torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    )
    start = time.perf_counter()
    transport.send(peer_id, {PROBE_TENSOR: tensor}, task, tag)
    return ProbeReport(nbytes, tensor_digest(tensor), time.perf_counter() - start)


@dataclass(frozen=True)
class TensorSummary:
    """Name, dtype, shape and digest of one waiting tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    digest: str


@dataclass(frozen=True)
class Delivery:
    """One peer's verified delivery waiting in the inbox."""

    task: str
    tag: str
    peer_id: str
    tensors: list[TensorSummary]


def describe_inbox(inbox: Inbox) -> list[Delivery]:
    """Every waiting delivery, with each tensor's digest (nothing is taken)."""
    return [
        Delivery(
            task,
            tag,
            peer,
            [
                TensorSummary(
                    name, str(t.dtype).removeprefix("torch."), tuple(t.shape), tensor_digest(t)
                )
                for name, t in tensors.items()
            ],
        )
        for task, tag, peer, tensors in inbox.pending()
    ]
