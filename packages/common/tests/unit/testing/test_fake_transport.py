import pytest
import torch

from mlnode.common.errors import PeerUnknown
from mlnode.common.testing import DictProvider, TransportHub
from mlnode.common.transport.api import TensorMeta, TensorTransport
from mlnode.common.transport.errors import LimitExceeded, NotOffered, PeerUnreachable


def test_fake_nodes_push_receive_and_fetch() -> None:
    hub = TransportHub()
    a, b = hub.node("a"), hub.node("b")
    transport: TensorTransport = a  # satisfies the protocol
    source = torch.ones(3)
    transport.send("b", {"x": source}, "t", "r")
    source += 1  # the receiver got a copy
    assert torch.equal(b.receive("t", "r", ["a", "c"], timeout=0.01)["a"]["x"], torch.ones(3))
    b.serve("t", DictProvider({"w": torch.arange(4)}))
    assert a.list_tensors("b", "t") == [TensorMeta("w", torch.int64, (4,))]
    assert torch.equal(a.fetch("b", "t", ["w"])["w"], torch.arange(4))
    with pytest.raises(NotOffered):
        a.fetch("b", "t", ["nope"])


def test_fake_failures() -> None:
    hub = TransportHub()
    a = hub.node("a")
    hub.node("b")
    hub.set_offline("b")
    with pytest.raises(PeerUnreachable):
        a.send("b", {"x": torch.ones(1)}, "t", "r")
    hub.set_offline("b", False)
    with pytest.raises(LimitExceeded, match="cannot be sent"):
        a.send("b", {"x": torch.ones(1, dtype=torch.float64)}, "t", "r")


def test_registered_only_hub_needs_keys_both_ways() -> None:
    hub = TransportHub(registered_only=True)
    a, b = hub.node("a"), hub.node("b")
    b.serve("t", DictProvider({"w": torch.ones(2)}))
    with pytest.raises(PeerUnknown):
        a.fetch("b", "t", ["w"])
    a.known.add("b")
    with pytest.raises(PeerUnknown):  # b has not registered a
        a.fetch("b", "t", ["w"])
    b.known.add("a")
    assert torch.equal(a.fetch("b", "t", ["w"])["w"], torch.ones(2))
    assert a.fetched == [("b", "t", ["w"])]
    with pytest.raises(PeerUnknown):
        a.send("c", {"x": torch.ones(1)}, "t", "r")


def test_a_killed_node_loses_what_it_held_and_cannot_call_out() -> None:
    hub = TransportHub()
    a, b = hub.node("a"), hub.node("b")
    a.send("b", {"x": torch.ones(1)}, "t", "r")
    b.serve("t", DictProvider({"w": torch.ones(2)}))
    hub.kill("b")
    with pytest.raises(PeerUnreachable):
        a.send("b", {"x": torch.ones(1)}, "t", "r")
    with pytest.raises(PeerUnreachable):
        b.send("a", {"x": torch.ones(1)}, "t", "r")
    hub.revive("b")
    assert b.receive("t", "r", ["a"], timeout=0.01) == {}
    with pytest.raises(NotOffered):
        a.fetch("b", "t", ["w"])


def test_a_lossy_link_drops_the_pushes_it_matches() -> None:
    hub = TransportHub()
    a, b = hub.node("a"), hub.node("b")
    a.lose = lambda peer, tag: tag.startswith("lost")
    a.send("b", {"x": torch.ones(1)}, "t", "lost-1")
    a.send("b", {"x": torch.ones(1)}, "t", "kept-1")
    assert b.receive("t", "lost-1", ["a"], timeout=0.01) == {}
    assert list(b.receive("t", "kept-1", ["a"], timeout=0.01)) == ["a"]
