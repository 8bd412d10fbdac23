"""The deterministic worker stand-in answers as `PocWorkerExtension` does, reproducibly."""

from mlnode.pow.engine.protocol import ChunkSpec, ModelInfo
from mlnode.pow.engine.testing import HIDDEN, DeterministicPocWorker, artifact
from mlnode.pow.poc.artifacts import decode_vector


def spec(nonces: list[int], block_hash: str = "bh") -> dict[str, object]:
    return ChunkSpec(block_hash, "pk", nonces, seq_len=16, k_dim=12).to_wire()


def test_vectors_do_not_depend_on_the_chunk_a_nonce_is_in() -> None:
    worker = DeterministicPocWorker()
    together = worker.mlnode_poc_vectors(spec([3, 4, 5]))
    alone = [row for n in (3, 4, 5) for row in worker.mlnode_poc_vectors(spec([n]))]
    assert together == alone
    assert [n for n, _ in together] == [3, 4, 5]
    assert together[1][1] == artifact("bh", "pk", 4, 12)


def test_another_block_gives_another_vector() -> None:
    worker = DeterministicPocWorker()
    ours = worker.mlnode_poc_vectors(spec([7]))[0][1]
    theirs = worker.mlnode_poc_vectors(spec([7], block_hash="other"))[0][1]
    assert ours != theirs
    decoded = decode_vector(ours)
    assert decoded is not None and decoded.shape == (12,)


def test_describe_is_a_model_info() -> None:
    info = ModelInfo.from_wire(DeterministicPocWorker().mlnode_poc_describe())
    assert info.hidden == HIDDEN and info.unsupported is None
    assert info.decode_unsupported is not None
