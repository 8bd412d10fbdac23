import pytest
import torch

from mlnode.common.transport.errors import LimitExceeded
from mlnode.common.transport.inbox import Inbox
from mlnode.common.transport.inbox_budget import TENSOR_OVERHEAD, InboxLimits, charge

OVER = TENSOR_OVERHEAD


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limits(**overrides: float) -> InboxLimits:
    values: dict[str, float] = {
        "total_bytes": 10_000,
        "peer_bytes": 10_000,
        "task_bytes": 10_000,
        "peer_deliveries": 100,
        "task_deliveries": 100,
        "ttl_s": 60,
        **overrides,
    }
    return InboxLimits(**values)  # type: ignore[arg-type]


def test_charge_counts_payload_and_a_fixed_overhead_per_tensor() -> None:
    assert charge({"x": torch.zeros(20)}) == 80 + OVER
    assert charge({"a": torch.zeros(0), "b": torch.zeros(0, 3)}) == 2 * OVER


def test_budget_counts_reservations_and_deliveries() -> None:
    inbox = Inbox(limits(total_bytes=100 + OVER, peer_bytes=100 + OVER, task_bytes=100 + OVER))
    inbox.reserve("t", "a", 60)
    with pytest.raises(LimitExceeded, match="MAX_INBOX_PEER_BYTES"):
        inbox.reserve("t", "a", 41 + OVER)
    inbox.release("t", "a", 60)
    inbox.put("t", "r", "a", {"x": torch.zeros(20)})
    assert inbox.held_bytes == 80 + OVER
    inbox.put("t", "r", "a", {"x": torch.zeros(5)})  # replaces
    assert inbox.held_bytes == 20 + OVER
    with pytest.raises(LimitExceeded, match="MAX_INBOX_PEER_BYTES"):
        inbox.put("t", "s", "a", {"x": torch.zeros(5)})
    assert set(inbox.take("t", "r", ["a"], timeout=0)) == {"a"}
    assert inbox.held_bytes == 0
    inbox.put("t", "s", "a", {"x": torch.zeros(5)})
    inbox.discard("t")
    assert inbox.held_bytes == 0 and inbox.pending() == []


def test_empty_tensors_count_as_deliveries_and_bytes() -> None:
    inbox = Inbox(limits(peer_deliveries=3))
    for tag in ("1", "2", "3"):
        inbox.put("t", tag, "a", {"e": torch.zeros(0)})
    with pytest.raises(LimitExceeded, match="MAX_INBOX_PEER_DELIVERIES"):
        inbox.put("t", "4", "a", {"e": torch.zeros(0)})
    inbox.put("t", "3", "a", {"e": torch.zeros(0)})  # a replacement is no new delivery
    assert inbox.held_bytes == 3 * OVER
    many = {f"e{i}": torch.zeros(0) for i in range(20)}
    with pytest.raises(LimitExceeded, match="BYTES"):
        Inbox(limits(total_bytes=10 * OVER)).put("t", "r", "a", many)


def test_one_peer_full_does_not_block_another() -> None:
    inbox = Inbox(limits(total_bytes=4000 + 4 * OVER, peer_bytes=2000 + 2 * OVER))
    inbox.put("t", "r1", "greedy", {"x": torch.zeros(250)})
    inbox.put("t", "r2", "greedy", {"x": torch.zeros(250)})
    with pytest.raises(LimitExceeded, match="peer greedy"):
        inbox.put("t", "r3", "greedy", {"x": torch.zeros(1)})
    with pytest.raises(LimitExceeded, match="peer greedy"):
        inbox.reserve("t", "greedy", 1)
    inbox.put("t", "r1", "honest", {"x": torch.zeros(250)})
    inbox.reserve("t", "honest", 2000)
    assert set(inbox.take("t", "r1", ["greedy", "honest"], timeout=0)) == {"greedy", "honest"}


def test_task_budgets_bound_all_peers_of_a_task() -> None:
    inbox = Inbox(limits(task_deliveries=2, task_bytes=3000))
    inbox.put("t", "r", "a", {"x": torch.zeros(1)})
    inbox.put("t", "r", "b", {"x": torch.zeros(1)})
    with pytest.raises(LimitExceeded, match="MAX_INBOX_TASK_DELIVERIES"):
        inbox.put("t", "r", "c", {"x": torch.zeros(1)})
    inbox.put("u", "r", "c", {"x": torch.zeros(1)})  # another task has its own
    with pytest.raises(LimitExceeded, match="MAX_INBOX_TASK_BYTES"):
        inbox.reserve("u", "c", 3000)


def test_unclaimed_deliveries_expire() -> None:
    clock = Clock()
    inbox = Inbox(limits(ttl_s=10), clock=clock)
    inbox.put("t", "old", "a", {"x": torch.zeros(10)})
    clock.now = 5
    inbox.put("t", "new", "a", {"x": torch.zeros(10)})
    assert inbox.expire() == 0
    clock.now = 10
    assert inbox.expire() == 1
    assert [tag for _, tag, _, _ in inbox.pending()] == ["new"]
    assert inbox.held_bytes == 40 + OVER
    clock.now = 15
    assert inbox.pending() == [] and inbox.held_bytes == 0


def test_take_leaves_other_peers_and_tags() -> None:
    inbox = Inbox()
    inbox.put("t", "r", "a", {"x": torch.ones(1)})
    inbox.put("t", "r", "b", {"x": torch.ones(1)})
    assert set(inbox.take("t", "r", ["a", "c"], timeout=0)) == {"a"}
    assert [(task, tag, peer) for task, tag, peer, _ in inbox.pending()] == [("t", "r", "b")]
    assert inbox.take("t", "r", [], timeout=5) == {}
