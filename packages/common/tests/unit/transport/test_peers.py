import json
import stat
from pathlib import Path

import pytest

from mlnode.common.transport.auth import Identity
from mlnode.common.transport.peers import KnownPeers, Peer, PeersFileError, check_address


def peer(peer_id: str, tasks: set[str] | None = None, address: str | None = None) -> Peer:
    key = Identity.from_seed(peer_id.encode().ljust(32, b"\0")).public_key
    return Peer(peer_id, key, address, frozenset(tasks) if tasks is not None else None)


def test_peers_persist_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    peers = KnownPeers(path)
    peers.put(peer("a", {"t1"}, "10.0.0.1:5000"))
    peers.put(peer("b"))
    reloaded = KnownPeers(path)
    assert reloaded.all() == peers.all()
    assert reloaded.get("a") == peer("a", {"t1"}, "10.0.0.1:5000")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p["peer_id"] for p in json.loads(path.read_text())["peers"]] == ["a", "b"]


def test_task_scope() -> None:
    assert peer("a", {"t1"}).allows("t1")
    assert not peer("a", {"t1"}).allows("t2")
    assert peer("a").allows("anything")


def test_replace_is_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    peers = KnownPeers(path)
    peers.put(peer("a"))
    before = path.read_text()
    twin = Peer("c", peer("b").public_key)
    with pytest.raises(ValueError, match="same public_key"):
        peers.replace([peer("b"), twin])
    with pytest.raises(ValueError, match="twice"):
        peers.replace([peer("b"), peer("b")])
    assert peers.all() == [peer("a")]
    assert path.read_text() == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def test_epoch_changes_when_entry_changes_or_goes_away() -> None:
    peers = KnownPeers()
    peers.put(peer("a", {"t"}))
    _, epoch = peers.by_key(peer("a").public_key) or (None, 0)
    peers.replace([peer("a", {"t"}), peer("b")])  # same entry: sessions go on
    assert peers.is_current("a", epoch)
    peers.put(peer("a", {"t", "u"}))
    assert not peers.is_current("a", epoch)
    _, epoch = peers.by_key(peer("a").public_key) or (None, 0)
    assert peers.remove("a") and not peers.is_current("a", epoch)
    assert not peers.remove("a")


@pytest.mark.parametrize("address", ["host", "host:0", "host:70000", ":80", "a b:80"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(ValueError):
        check_address(address)


def test_good_addresses() -> None:
    for address in ["10.0.0.1:5000", "node-1.example:50051", "[::1]:80"]:
        assert check_address(address) == address


@pytest.mark.parametrize("text", ["not json", "{}", '{"peers": [{"peer_id": "a"}]}', "[]"])
def test_a_damaged_peers_file_is_refused_with_its_path(tmp_path: Path, text: str) -> None:
    path = tmp_path / "peers.json"
    path.write_text(text)
    with pytest.raises(PeersFileError, match="peers.json"):
        KnownPeers(path)
