import threading
import time

import pytest
import torch

from mlnode.common.testing import DictProvider, TransportHub
from mlnode.train.diloco.math import weights_hash
from mlnode.train.diloco.sync import (
    InvalidState,
    Snapshot,
    SnapshotProvider,
    announce,
    offered_rounds,
    offered_states,
    peer_states,
    pull_snapshot,
    vote,
)
from mlnode.train.diloco.validate import layout_of


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


def test_peer_states_waits_for_a_peer_that_starts_serving_late() -> None:
    hub = TransportHub()
    provider = SnapshotProvider()
    provider.publish(snapshot(6, 1.0))
    timer = threading.Timer(0.3, hub.node("w1").serve, args=("t", provider))
    timer.start()

    offers = peer_states(hub.node("w0"), ["w1", "w2"], "t", wait_s=1.5)

    # w2 never served: given up after wait_s; w1 states the hash of what it serves.
    assert offers == {"w1": {6: snapshot(6, 1.0).state_digest()}}


def test_a_pulled_state_must_hash_to_the_vouched_value_and_fit_the_model() -> None:
    hub = TransportHub()
    me, liar = hub.node("w0"), hub.node("w1")
    honest = snapshot(3, 1.0)
    layout = layout_of(honest.params)
    other = snapshot(3, 9.0)
    nan = Snapshot(3, {"w": torch.full((3,), float("nan"))}, {"w": torch.zeros(3)})
    wrong = Snapshot(3, {"w": torch.ones(4)}, {"w": torch.zeros(4)})
    for fake in (other, nan, wrong):
        tensors = {"r3/param/w": fake.params["w"], "r3/momentum/w": fake.momentum["w"]}
        # It states the honest hash beside a different state.
        tensors["r3/meta/sha256"] = torch.frombuffer(
            bytearray.fromhex(honest.state_digest()), dtype=torch.uint8
        )
        liar.serve("t", DictProvider(tensors))
        assert offered_states(me, "w1", "t") == {3: honest.state_digest()}
        # A wrong shape is refused by the fetch itself, before its memory is allocated.
        with pytest.raises((InvalidState, ValueError), match="refused|other than listed"):
            pull_snapshot(me, "w1", "t", 3, layout=layout, digest=honest.state_digest())
    provider = SnapshotProvider()
    provider.publish(honest)
    liar.serve("t", provider)
    pulled = pull_snapshot(me, "w1", "t", 3, layout=layout, digest=honest.state_digest())
    assert pulled.state_digest() == honest.state_digest()
    with pytest.raises(InvalidState, match="does not serve round 4"):
        pull_snapshot(me, "w1", "t", 4, layout=layout, digest=honest.state_digest())


def test_a_hash_vote_ignores_what_is_not_a_hash() -> None:
    hub = TransportHub()
    me = hub.node("w0")
    for peer in ("w1", "w2"):
        hub.node(peer)
    hub.node("w1").send("w0", {"sha256": torch.zeros(64, dtype=torch.uint8)}, "t", "outer-2/hash")
    hub.node("w2").send("w0", {"sha256": torch.zeros(32)}, "t", "outer-2/hash")

    outcome = vote(
        me,
        {"w1": 1, "w2": 2},
        ["w1", "w2"],
        task="t",
        round_index=2,
        my_rank=0,
        digest="cc" * 32,
        timeout_s=1.0,
        max_faulty=1,
    )

    assert outcome.hashes == {0: "cc" * 32} and outcome.agrees("cc" * 32)


def test_a_peer_that_never_votes_does_not_hold_up_a_settled_vote() -> None:
    hub = TransportHub()
    names = ["w0", "w1", "w2", "w3", "silent"]
    for name in names:
        hub.node(name)
    for peer in ("w1", "w2", "w3"):
        announce(hub.node(peer), ["w0"], "t", 5, "aa" * 32)
    started = time.monotonic()

    outcome = vote(
        hub.node("w0"),
        {n: r for r, n in enumerate(names) if r},
        names[1:],
        task="t",
        round_index=5,
        my_rank=0,
        digest="aa" * 32,
        timeout_s=60,
        max_faulty=1,
    )

    assert time.monotonic() - started < 10
    assert outcome.agrees("aa" * 32) and sorted(outcome.hashes) == [0, 1, 2, 3]
