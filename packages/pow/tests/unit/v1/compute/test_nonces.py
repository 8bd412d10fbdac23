"""Nonce shares: complete and disjoint across nodes and local GPU groups."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlnode.pow.v1.compute.nonces import NonceShare, node_shares


@given(
    group_counts=st.lists(st.integers(1, 8), min_size=1, max_size=12),
    limit=st.integers(1, 400),
)
def test_shares_cover_every_nonce_once(group_counts: list[int], limit: int) -> None:
    """Nodes may run different numbers of GPU groups; every nonce below `limit` is owned once."""
    node_count = len(group_counts)
    owners: dict[int, tuple[int, int]] = {}
    for node_id, groups in enumerate(group_counts):
        for share in node_shares(node_id, node_count, groups):
            for index in itertools.count():
                nonce = share.nonce(index)
                if nonce >= limit:
                    break
                assert nonce not in owners, f"{nonce} owned by {owners[nonce]} and {share}"
                owners[nonce] = (node_id, share.group_id)
                assert share.contains(nonce)
    assert sorted(owners) == list(range(limit))


@given(
    node_count=st.integers(1, 16),
    group_count=st.integers(1, 8),
    batch_size=st.integers(1, 64),
    batches=st.integers(1, 5),
)
def test_batches_continue_without_gaps(
    node_count: int, group_count: int, batch_size: int, batches: int
) -> None:
    share = NonceShare(node_count - 1, node_count, group_count - 1, group_count)
    stream = share.batches(batch_size)
    seen = [n for _ in range(batches) for n in next(stream)]
    assert seen == [share.nonce(i) for i in range(batch_size * batches)]
    resumed = next(share.batches(batch_size, start_index=batch_size))
    assert resumed == [share.nonce(i) for i in range(batch_size, 2 * batch_size)]


@pytest.mark.parametrize(
    ("node_id", "node_count", "group_id", "group_count"),
    [(2, 2, 0, 1), (-1, 2, 0, 1), (0, 0, 0, 1), (0, 1, 1, 1), (0, 1, 0, 0)],
)
def test_ids_outside_counts_are_refused(
    node_id: int, node_count: int, group_id: int, group_count: int
) -> None:
    with pytest.raises(ValueError):
        NonceShare(node_id, node_count, group_id, group_count)
