import pytest

from mlnode.common.transport import auth
from mlnode.common.transport.errors import ImpostorPeer, NotAuthenticated, SessionRevoked
from mlnode.common.transport.handshake import OpenSessions, ServerHandshake, check_server_hello
from mlnode.common.transport.peers import KnownPeers, Peer

PUSH = "/mlnode.transport.v1.Transport/Push"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world() -> tuple[auth.Identity, auth.Identity, KnownPeers, ServerHandshake, Clock]:
    server, client = auth.Identity.generate(), auth.Identity.generate()
    peers = KnownPeers()
    peers.put(Peer("client", client.public_key, tasks=frozenset({"t"})))
    clock = Clock()
    return server, client, peers, ServerHandshake(server, peers, ttl_s=30, clock=clock), clock


def full_handshake(server, client, handshake, task="t", method=PUSH):
    client_nonce = auth.new_nonce()
    server_nonce, signature = handshake.hello(client.public_key, task, client_nonce)
    me_as_server = Peer("server", server.public_key)
    check_server_hello(
        me_as_server,
        client.public_key,
        task,
        client_nonce,
        server.public_key,
        server_nonce,
        signature,
    )
    proof = client.sign(
        auth.client_proof_message(
            client.public_key, server.public_key, task, client_nonce, server_nonce, method
        )
    )
    return client_nonce, server_nonce, proof


def test_valid_handshake_gives_a_session_both_sides_can_name(world) -> None:
    server, client, _, handshake, _ = world
    client_nonce, server_nonce, proof = full_handshake(server, client, handshake)
    session = handshake.open_session(client.public_key, "t", server_nonce, proof, PUSH)
    assert session.peer.peer_id == "client"
    assert session.id == auth.session_id(client_nonce, server_nonce)


def test_unknown_key_and_wrong_task_are_refused_at_hello(world) -> None:
    _, client, _, handshake, _ = world
    stranger = auth.Identity.generate()
    with pytest.raises(NotAuthenticated, match="not accepted for task"):
        handshake.hello(stranger.public_key, "t", auth.new_nonce())
    with pytest.raises(NotAuthenticated, match="not accepted for task"):
        handshake.hello(client.public_key, "other", auth.new_nonce())


def test_a_proof_works_once(world) -> None:
    server, client, _, handshake, _ = world
    _, server_nonce, proof = full_handshake(server, client, handshake)
    handshake.open_session(client.public_key, "t", server_nonce, proof, PUSH)
    with pytest.raises(NotAuthenticated, match="expired or used"):
        handshake.open_session(client.public_key, "t", server_nonce, proof, PUSH)


def test_proof_is_bound_to_method_key_and_freshness(world) -> None:
    server, client, _, handshake, clock = world
    _, nonce, proof = full_handshake(server, client, handshake)
    with pytest.raises(NotAuthenticated, match="bad handshake proof"):
        handshake.open_session(client.public_key, "t", nonce, proof, "/other")
    _, nonce, proof = full_handshake(server, client, handshake)
    clock.now += 31
    with pytest.raises(NotAuthenticated, match="expired"):
        handshake.open_session(client.public_key, "t", nonce, proof, PUSH)
    _, nonce, _ = full_handshake(server, client, handshake)
    forged = auth.Identity.generate().sign(b"whatever")
    with pytest.raises(NotAuthenticated):
        handshake.open_session(client.public_key, "t", nonce, forged, PUSH)


def test_removed_peer_session_is_revoked(world) -> None:
    server, client, peers, handshake, _ = world
    _, nonce, proof = full_handshake(server, client, handshake)
    session = handshake.open_session(client.public_key, "t", nonce, proof, PUSH)
    session.check(peers)
    peers.remove("client")
    with pytest.raises(SessionRevoked):
        session.check(peers)


def test_client_detects_an_impostor_server(world) -> None:
    server, client, _, handshake, _ = world
    expected = Peer("server", auth.Identity.generate().public_key, "h:1")
    client_nonce = auth.new_nonce()
    server_nonce, signature = handshake.hello(client.public_key, "t", client_nonce)
    with pytest.raises(ImpostorPeer, match="answered with key"):
        check_server_hello(
            expected,
            client.public_key,
            "t",
            client_nonce,
            server.public_key,
            server_nonce,
            signature,
        )
    # right key claimed, but the signature is over another client nonce (a replayed answer)
    real = Peer("server", server.public_key, "h:1")
    with pytest.raises(ImpostorPeer, match="does not verify"):
        check_server_hello(
            real,
            client.public_key,
            "t",
            auth.new_nonce(),
            server.public_key,
            server_nonce,
            signature,
        )


def test_open_sessions_are_cancelled_when_their_peer_goes(world) -> None:
    server, client, peers, handshake, _ = world
    sessions = OpenSessions(peers)
    _, nonce, proof = full_handshake(server, client, handshake)
    session = handshake.open_session(client.public_key, "t", nonce, proof, PUSH)
    cancelled: list[str] = []
    with sessions.track(session, lambda: cancelled.append("x")):
        peers.put(Peer("someone-else", auth.Identity.generate().public_key))
        assert cancelled == [] and len(sessions) == 1
        peers.remove("client")
        assert cancelled == ["x"]
    assert len(sessions) == 0
