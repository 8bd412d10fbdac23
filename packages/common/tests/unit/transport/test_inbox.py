import pytest
import torch

from mlnode.common.transport.errors import LimitExceeded
from mlnode.common.transport.inbox import Inbox


def test_budget_counts_reservations_and_deliveries() -> None:
    inbox = Inbox(max_bytes=100)
    inbox.reserve(60)
    with pytest.raises(LimitExceeded, match="MAX_INBOX_BYTES"):
        inbox.reserve(41)
    inbox.release(60)
    inbox.put("t", "r", "a", {"x": torch.zeros(20)})  # 80 bytes
    assert inbox.held_bytes == 80
    inbox.put("t", "r", "a", {"x": torch.zeros(5)})  # replaces: 20 bytes
    assert inbox.held_bytes == 20
    inbox.put("t", "s", "a", {"x": torch.zeros(5)})
    assert set(inbox.take("t", "r", ["a"], timeout=0)) == {"a"}
    assert inbox.held_bytes == 20
    inbox.discard("t")
    assert inbox.held_bytes == 0 and inbox.pending() == []


def test_take_leaves_other_peers_and_tags() -> None:
    inbox = Inbox()
    inbox.put("t", "r", "a", {"x": torch.ones(1)})
    inbox.put("t", "r", "b", {"x": torch.ones(1)})
    assert set(inbox.take("t", "r", ["a", "c"], timeout=0)) == {"a"}
    assert [(task, tag, peer) for task, tag, peer, _ in inbox.pending()] == [("t", "r", "b")]
    assert inbox.take("t", "r", [], timeout=5) == {}
