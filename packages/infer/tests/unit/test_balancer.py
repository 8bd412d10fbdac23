from collections import Counter

from mlnode.infer.balancer import Backend, LeastConnections

A = Backend("a", "127.0.0.1", 1)
B = Backend("b", "127.0.0.1", 2)


def test_empty_gives_none() -> None:
    assert LeastConnections().acquire() is None


def test_picks_least_busy() -> None:
    lb = LeastConnections()
    lb.set_backends([A, B])
    first = lb.acquire()
    second = lb.acquire()
    assert {first, second} == {A, B}
    lb.release(A)
    assert lb.acquire() is A
    assert lb.in_flight(A) == 1 and lb.in_flight(B) == 1
    assert lb.total_in_flight() == 2


def test_ties_rotate() -> None:
    lb = LeastConnections()
    lb.set_backends([A, B])
    picks: Counter[Backend] = Counter()
    for _ in range(10):
        backend = lb.acquire()
        assert backend is not None
        picks[backend] += 1
        lb.release(backend)
    assert picks == {A: 5, B: 5}


def test_release_unknown_is_noop() -> None:
    lb = LeastConnections()
    lb.set_backends([A])
    lb.release(B)
    lb.release(A)
    assert lb.total_in_flight() == 0


def test_removed_backend_keeps_count_until_drained() -> None:
    lb = LeastConnections()
    lb.set_backends([A])
    assert lb.acquire() is A
    lb.set_backends([B])
    assert lb.backends == (B,)
    assert lb.in_flight(A) == 1
    lb.set_backends([A, B])
    assert lb.acquire() is B
    lb.release(A)
    assert lb.in_flight(A) == 0
    assert lb.acquire() is A


def test_drained_removed_backend_is_forgotten() -> None:
    lb = LeastConnections()
    lb.set_backends([A])
    lb.acquire()
    lb.set_backends([])
    lb.release(A)
    lb.release(A)
    assert lb.total_in_flight() == 0
