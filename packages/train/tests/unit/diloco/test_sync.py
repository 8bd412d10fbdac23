import threading

import torch

from mlnode.common.testing import TransportHub
from mlnode.train.diloco.math import weights_hash
from mlnode.train.diloco.sync import (
    Snapshot,
    SnapshotProvider,
    announce,
    offered_rounds,
    peer_offers,
    pull_snapshot,
    vote,
)


def snapshot(round_index: int, value: float) -> Snapshot:
    return Snapshot(round_index, {"w": torch.full((3,), value)}, {"w": torch.zeros(3)})


def test_provider_keeps_the_newest_snapshots() -> None:
    provider = SnapshotProvider(keep=2)
    for r in range(4):
        provider.publish(snapshot(r, float(r)))

    assert offered_rounds(provider.describe()) == [3, 2]
    assert float(provider.get("r3/param/w")[0]) == 3.0


def test_pull_snapshot_takes_the_asked_round_or_the_newest() -> None:
    hub = TransportHub()
    provider = SnapshotProvider()
    provider.publish(snapshot(4, 4.0))
    provider.publish(snapshot(5, 5.0))
    hub.node("w1").serve("task", provider)

    assert pull_snapshot(hub.node("w0"), "w1", "task", 4).params["w"][0] == 4.0
    pulled = pull_snapshot(hub.node("w0"), "w1", "task", 9)
    assert pulled.round == 5
    assert torch.equal(pulled.momentum["w"], torch.zeros(3))


def test_vote_majority_wins_and_names_its_holders() -> None:
    hub = TransportHub()
    names = ["w0", "w1", "w2"]
    digests = ["aa" * 32, "aa" * 32, "bb" * 32]
    outcomes = {}

    def work(rank: int) -> None:
        peers = {n: r for r, n in enumerate(names) if r != rank}
        outcomes[rank] = vote(
            hub.node(names[rank]),
            peers,
            list(peers),
            task="t",
            round_index=1,
            my_rank=rank,
            digest=digests[rank],
            timeout_s=5,
        )

    threads = [threading.Thread(target=work, args=(r,)) for r in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    for rank in range(3):
        assert outcomes[rank].winner == "aa" * 32
    assert not outcomes[2].agrees(digests[2])
    assert outcomes[2].holders == ["w0", "w1"]
    assert outcomes[0].hashes == {0: digests[0], 1: digests[1], 2: digests[2]}


def test_vote_tie_goes_to_the_lowest_rank() -> None:
    hub = TransportHub()
    names, digests = ["w0", "w1"], ["cc" * 32, "dd" * 32]
    outcomes = {}

    def work(rank: int) -> None:
        other = {names[1 - rank]: 1 - rank}
        outcomes[rank] = vote(
            hub.node(names[rank]),
            other,
            list(other),
            task="t",
            round_index=1,
            my_rank=rank,
            digest=digests[rank],
            timeout_s=5,
        )

    threads = [threading.Thread(target=work, args=(r,)) for r in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert outcomes[0].winner == outcomes[1].winner == "cc" * 32
    assert outcomes[1].holders == ["w0"]


def test_a_hash_announced_after_a_pull_counts_in_the_vote_of_a_waiting_peer() -> None:
    hub = TransportHub()
    peers = {"w1": 1, "w2": 2}
    # w2 took w1's state without voting; a later, corrected hash replaces an earlier one.
    announce(hub.node("w2"), ["w0", "w1"], "t", 4, "ee" * 32)
    announce(hub.node("w2"), ["w0", "w1"], "t", 4, "dd" * 32)
    announce(hub.node("w1"), ["w0"], "t", 4, "dd" * 32)

    outcome = vote(
        hub.node("w0"),
        peers,
        list(peers),
        task="t",
        round_index=4,
        my_rank=0,
        digest="cc" * 32,
        timeout_s=5,
    )

    # Without w2's hash the tie between w0 and w1 would go to w0, forking the run.
    assert outcome.winner == "dd" * 32 and outcome.holders == ["w1", "w2"]
    assert outcome.hashes == {0: "cc" * 32, 1: "dd" * 32, 2: "dd" * 32}
    hub.kill("w1")
    assert announce(hub.node("w2"), ["w0", "w1"], "t", 5, "dd" * 32) == {"w1"}


def test_a_worker_alone_wins_its_own_vote() -> None:
    outcome = vote(
        TransportHub().node("w1"),
        {"w0": 0},
        ["w0"],
        task="t",
        round_index=1,
        my_rank=1,
        digest="cc" * 32,
        timeout_s=0.1,
    )

    assert outcome.agrees("cc" * 32)


def test_snapshot_digest_is_the_weights_hash() -> None:
    snap = snapshot(1, 2.0)

    assert snap.digest() == weights_hash(snap.params)


def test_peer_offers_waits_for_a_peer_that_starts_serving_late() -> None:
    hub = TransportHub()
    provider = SnapshotProvider()
    provider.publish(snapshot(6, 1.0))
    timer = threading.Timer(0.3, hub.node("w1").serve, args=("t", provider))
    timer.start()

    offers = peer_offers(hub.node("w0"), ["w1", "w2"], "t", wait_s=1.5)

    assert offers == {"w1": 6}  # w2 never served: given up after wait_s
