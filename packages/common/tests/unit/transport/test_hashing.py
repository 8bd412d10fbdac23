import os
import sys
import threading

import pytest
from blake3 import blake3

from mlnode.common.transport import hashing
from mlnode.common.transport.hashing import INLINE_BYTES, MAX_PENDING, OrderedHash


def chunks(seed: int) -> list[bytes]:
    sizes = [10, INLINE_BYTES + 1, 3, INLINE_BYTES * 2, 0, 77] + [INLINE_BYTES] * (MAX_PENDING + 3)
    return [os.urandom(n) if (i + seed) % 2 else bytes([seed]) * n for i, n in enumerate(sizes)]


def test_digest_is_the_hash_of_every_chunk_in_order() -> None:
    parts = chunks(1)
    hasher = OrderedHash()
    for part in parts:
        hasher.update(memoryview(part))
    assert hasher.digest() == blake3(b"".join(parts)).digest()
    assert hasher.digest() != blake3(b"".join(reversed(parts))).digest()


def test_streams_hashed_at_once_do_not_mix() -> None:
    got: dict[int, bytes] = {}
    data = {seed: chunks(seed) for seed in range(6)}

    def run(seed: int) -> None:
        hasher = OrderedHash()
        for part in data[seed]:
            hasher.update(part)
        got[seed] = hasher.digest()

    threads = [threading.Thread(target=run, args=(seed,)) for seed in data]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == {seed: blake3(b"".join(parts)).digest() for seed, parts in data.items()}


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
def test_workers_hash_at_a_lower_priority_than_their_caller() -> None:
    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    caller = nice()
    worker = hashing._POOL.submit(nice).result()
    assert worker == min(caller + hashing.HASH_NICE, 19) and nice() == caller
