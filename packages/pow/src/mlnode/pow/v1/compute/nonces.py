"""Which nonces a node's GPU group tries: disjoint, gap-free shares of 0, 1, 2, ...

Node `i` of `n` owns every nonce congruent to `i` mod `n`; its `G` local groups split that share
again (`offset = node_id + group_id * n`, `step = G * n`). Shares stay disjoint across nodes even
when nodes run different numbers of groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class NonceShare:
    """The arithmetic progression of nonces one GPU group of one node computes."""

    node_id: int
    node_count: int
    group_id: int = 0
    group_count: int = 1

    def __post_init__(self) -> None:
        """Refuse ids outside their counts."""
        if self.node_count < 1 or not 0 <= self.node_id < self.node_count:
            raise ValueError(f"node_id {self.node_id} is not in [0, node_count={self.node_count})")
        if self.group_count < 1 or not 0 <= self.group_id < self.group_count:
            raise ValueError(f"group_id {self.group_id} is not in [0, {self.group_count})")

    @property
    def offset(self) -> int:
        """The first nonce."""
        return self.node_id + self.group_id * self.node_count

    @property
    def step(self) -> int:
        """Distance between consecutive nonces."""
        return self.group_count * self.node_count

    def nonce(self, index: int) -> int:
        """The `index`-th nonce of the share."""
        return self.offset + index * self.step

    def contains(self, nonce: int) -> bool:
        """Whether `nonce` belongs to this share."""
        return nonce >= self.offset and (nonce - self.offset) % self.step == 0

    def batches(self, batch_size: int, start_index: int = 0) -> Iterator[list[int]]:
        """Endless consecutive batches of the share's nonces."""
        index = start_index
        while True:
            yield [self.nonce(i) for i in range(index, index + batch_size)]
            index += batch_size


def node_shares(node_id: int, node_count: int, group_count: int) -> list[NonceShare]:
    """The shares of each local GPU group of one node."""
    return [NonceShare(node_id, node_count, g, group_count) for g in range(group_count)]
