"""`GenerateJob` and `MiningJob` bookkeeping: decode verdict counters and non-finite steps."""

import math

from mlnode.pow.engine.checks import ProofShape
from mlnode.pow.engine.jobs import ChunkOutput, GenerateJob, MiningJob, without_non_finite
from mlnode.pow.poc.schemas import PocArtifactOut, PocGenerateRequest, PocInitGenerateRequest

BLOCK = {"block_hash": "bh", "block_height": 5, "public_key": "pk", "node_id": 0}
PARAMS = {"model": "m", "seq_len": 4, "decode": True, "max_tokens": 1}


def shape(chunk: int) -> ProofShape:
    return ProofShape("bh", "pk", 4, 12, False, max_tokens=1, chunk=chunk, codebook_sha256="0" * 64)


def test_trajectories_with_a_minus_one_step_are_split_off() -> None:
    artifacts = [
        PocArtifactOut(nonce=1, vector_b64="", k_points_steps=[3, 4]),
        PocArtifactOut(nonce=2, vector_b64="", k_points_steps=[3, -1]),
        PocArtifactOut(nonce=3, vector_b64="", k_points_steps=[-1, -1]),
        PocArtifactOut(nonce=4, vector_b64="AAAA"),
    ]
    out = without_non_finite(artifacts)
    assert [a.nonce for a in out.artifacts] == [1, 4] and out.non_finite == [2, 3]


def test_mining_never_buffers_a_minus_one_and_counts_it() -> None:
    request = PocInitGenerateRequest.model_validate(
        {**BLOCK, "node_count": 1, "batch_size": 2, "params": PARAMS}
    )
    job = MiningJob(request, shape(2), buffer_cap=10)
    good = PocArtifactOut(nonce=0, vector_b64="", k_points_steps=[1, 2])
    bad = PocArtifactOut(nonce=1, vector_b64="", k_points_steps=[1, -1])
    job.done([0, 1], without_non_finite([good, bad]))
    delivery = job.take_delivery()
    assert delivery is not None and [a.nonce for a in delivery.artifacts] == [0]
    assert (job.processed, job.non_finite) == (2, 1)


async def test_decode_validation_reports_its_non_finite_steps() -> None:
    nonces = list(range(4))
    claims = [{"nonce": n, "vector_b64": "", "k_points_steps": [0, 1]} for n in nonces]
    request = PocGenerateRequest.model_validate(
        {
            **BLOCK,
            "nonces": nonces,
            "params": PARAMS,
            "validation": {"artifacts": claims},
            "url": "http://127.0.0.1:9/cb",
        }
    )
    job = GenerateJob(request, shape(4))
    good = [[0.9, 0.1], [0.2, 0.8]]
    scores = dict.fromkeys(nonces, good) | {2: [[0.9, 0.1], [math.nan, 0.8]]}
    job.done(nonces, ChunkOutput([], scores=scores))
    result = job.result()
    assert (result.n_total, result.n_mismatch, result.n_nan_steps) == (4, 0, 1)
    assert result.n_excluded == 0 and result.fraud_detected is False
    delivery = job.callback(result)
    assert delivery is not None
    url, body = delivery
    assert url == "http://127.0.0.1:9/cb/validated"
    assert (body["n_nan_steps"], body["n_excluded"], body["excluded_nonces"]) == (1, 0, [])
