"""PoC v2 decode scheme (SPEC §3): codebook, step seeds, step inputs and picks, snapping.

The codebook is a network parameter that cannot be rebuilt reproducibly, so it is an operator-given
file whose sha256 (over its float32 little-endian bytes, not over the file) must match a configured
value; nothing here guesses or generates one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from mlnode.pow.poc.artifacts import normalise, pick_indices_for_seeds
from mlnode.pow.poc.inputs import embedding_seed_string
from mlnode.pow.poc.rng import MASK32, batched_normal, murmur3_32, seed_from_string

SPHERE_DIM = 256
SPHERE_POINTS = 16
SALT_EMBED = 0x0D
SALT_PICK = 0x91
#: Pseudo-token salt of DeepSeek-V4 decode rows (listed for completeness; dense models ignore it).
SALT_PSEUDO_TOKEN = 0x57
_PREV_K_MUL = 0x9E3779B1
_STEP_MUL = 0x85EBCA77
#: Largest codebook file read (the network's is 16 KiB).
MAX_CODEBOOK_BYTES = 16 << 20
_CODEBOOK_TENSOR = "codebook"


class CodebookError(ValueError):
    """The configured codebook file is missing, malformed or not the configured one."""


@dataclass(frozen=True)
class Codebook:
    """Unit points `[P, D]` (float32) that decode steps snap to, with their sha256."""

    points: torch.Tensor
    sha256: str

    @property
    def dim(self) -> int:
        """Dimensions of each point (the number of hidden indices picked per step)."""
        return int(self.points.shape[1])

    @property
    def n_points(self) -> int:
        """Number of points (the range of `k_points_steps` values)."""
        return int(self.points.shape[0])

    @classmethod
    def from_tensor(cls, points: torch.Tensor, expected_sha256: str) -> Codebook:
        """Check shape, finiteness and hash of `points` and wrap them."""
        if points.dim() != 2 or points.shape[0] < 2 or points.shape[1] < 1:
            raise CodebookError(
                f"codebook must be a [points, dim] matrix, got {list(points.shape)}"
            )
        pts = points.detach().to(device="cpu", dtype=torch.float32).contiguous()
        if not bool(torch.isfinite(pts).all()):
            raise CodebookError("codebook holds NaN or infinite values")
        digest = codebook_sha256(pts)
        if digest != expected_sha256.strip().lower():
            raise CodebookError(
                f"codebook sha256 is {digest}, the configured one is {expected_sha256}: "
                "refusing to compute decode artifacts with another codebook"
            )
        return cls(points=pts, sha256=digest)

    @classmethod
    def load(cls, path: str | Path, expected_sha256: str) -> Codebook:
        """Read a codebook file: safetensors (tensor `codebook`) or raw float32 LE `[P, 256]`."""
        file = Path(path)
        try:
            size = file.stat().st_size
        except OSError as exc:
            raise CodebookError(f"codebook file {file} cannot be read: {exc}") from exc
        if size > MAX_CODEBOOK_BYTES:
            raise CodebookError(f"codebook file {file} is {size} bytes, over {MAX_CODEBOOK_BYTES}")
        points = _read_safetensors(file) if file.suffix == ".safetensors" else _read_raw(file)
        return cls.from_tensor(points, expected_sha256)


def codebook_sha256(points: torch.Tensor) -> str:
    """sha256 hex of the float32 little-endian bytes of `points` (row-major)."""
    arr = points.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    return hashlib.sha256(arr.astype("<f4").tobytes()).hexdigest()


def _read_safetensors(file: Path) -> torch.Tensor:
    try:
        with safe_open(str(file), framework="pt") as f:
            if _CODEBOOK_TENSOR not in f.keys():
                raise CodebookError(f"{file} holds no tensor named {_CODEBOOK_TENSOR!r}")
            tensor: torch.Tensor = f.get_tensor(_CODEBOOK_TENSOR)
            return tensor
    except CodebookError:
        raise
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise CodebookError(f"{file} is not a readable safetensors file: {exc}") from exc


def _read_raw(file: Path) -> torch.Tensor:
    raw = file.read_bytes()
    if not raw or len(raw) % (4 * SPHERE_DIM):
        raise CodebookError(
            f"{file}: a raw codebook must be float32 rows of {SPHERE_DIM}, got {len(raw)} bytes"
        )
    arr = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(-1, SPHERE_DIM)
    return torch.from_numpy(arr)


def step_key(t: int, prev_k: int, salt: int) -> int:
    """Murmur key of decode step `t` after index `prev_k` (SPEC §3; `prev_k` taken mod 2^32)."""
    return ((prev_k & MASK32) * _PREV_K_MUL + t * _STEP_MUL + salt) & MASK32


def step_seed(base: int, t: int, prev_k: int, salt: int) -> int:
    """`murmur(step_key(t, prev_k, salt), base)`."""
    key = torch.tensor([step_key(t, prev_k, salt)], dtype=torch.int64)
    return int(murmur3_32(key, base)[0])


def base_seeds(block_hash: str, public_key: str, nonces: Sequence[int]) -> list[int]:
    """Per-nonce base of the step seeds: the seed of the nonce's embedding string."""
    return [seed_from_string(embedding_seed_string(block_hash, public_key, n)) for n in nonces]


def step_seeds(
    block_hash: str,
    public_key: str,
    nonces: Sequence[int],
    t: int,
    prev_k: Sequence[int],
    salt: int,
) -> list[int]:
    """Step seeds of several nonces (one `prev_k` each)."""
    if len(prev_k) != len(nonces):
        raise ValueError(f"need one prev_k per nonce, got {len(prev_k)} for {len(nonces)}")
    keys = torch.tensor([step_key(t, k, salt) for k in prev_k], dtype=torch.int64)
    bases = torch.tensor(base_seeds(block_hash, public_key, nonces), dtype=torch.int64)
    return [int(v) for v in murmur3_32(keys, bases).tolist()]


def step_embeddings(
    block_hash: str,
    public_key: str,
    nonces: Sequence[int],
    t: int,
    prev_k: Sequence[int],
    hidden: int,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The one input embedding `[B, H]` of decode step `t >= 1`, in the model dtype."""
    seeds = step_seeds(block_hash, public_key, nonces, t, prev_k, SALT_EMBED)
    return batched_normal(seeds, hidden, dtype=dtype, device=device)


def decode_pick_indices(
    block_hash: str,
    public_key: str,
    nonces: Sequence[int],
    t: int,
    prev_k: Sequence[int] | None,
    hidden: int,
    dim: int = SPHERE_DIM,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """`[B, dim]` hidden indices snapped at step `t`, in CUDA top-k order (SPEC §2.6).

    Step 0 seeds from `{bh}_{pk}_nonce_{n}_pick_{dim}_decode0`; later steps from the step seed with
    the pick salt and the previous index.
    """
    if hidden < dim:
        raise ValueError(f"the decode scheme needs hidden >= {dim}, the model has {hidden}")
    if t == 0:
        seeds = [
            seed_from_string(f"{block_hash}_{public_key}_nonce_{n}_pick_{dim}_decode0")
            for n in nonces
        ]
    else:
        if prev_k is None:
            raise ValueError("steps after 0 need the previous indices")
        seeds = step_seeds(block_hash, public_key, nonces, t, prev_k, SALT_PICK)
    return pick_indices_for_seeds(seeds, dim, hidden, device=device)


def snap(
    h: torch.Tensor, idx: torch.Tensor, codebook: Codebook
) -> tuple[torch.Tensor, torch.Tensor]:
    """Snap post-norm hidden states `[B, H]` to codebook points.

    `q = h'[idx] / (||h'[idx]|| + 1e-8)` with `h' = h / (||h|| + 1e-8)` (float32); scores `q . C_j`.

    Returns:
        `(k, scores)`: argmax indices `[B]` (-1 where q is not finite) and scores `[B, P]`.
    """
    if idx.shape[-1] != codebook.dim:
        raise ValueError(f"picked {idx.shape[-1]} indices for a codebook of dim {codebook.dim}")
    q = normalise(torch.gather(normalise(h.to(torch.float32)), 1, idx.to(h.device)))
    scores = q @ codebook.points.to(q.device).T
    k = torch.argmax(scores, dim=-1)
    finite = torch.isfinite(q).all(dim=-1)
    return torch.where(finite, k, torch.full_like(k, -1)), scores


#: Base of the seeded routing ladder: one value for every model since 2026-09-07 (SPEC §3).
LADDER_BASE = 100.0
#: Router logit of every expert outside the ladder.
LADDER_OFF = -1e4


def routing_ladder(
    block_hash: str,
    nonces: Sequence[int],
    layer: int,
    steps: Sequence[int],
    n_experts: int,
    top_k: int,
    base: float = LADDER_BASE,
) -> torch.Tensor:
    """Router logits `[len(nonces), n_experts]` of decode PoC rows at MoE layer `layer` (SPEC §3).

    Row i: `start = murmur(steps[i], seed("{bh}_n{nonce}_route_layer_{layer}")) mod n_experts`;
    experts `start .. start+top_k-1` (mod n) get `base+top_k .. base+1`, every other `LADDER_OFF`.
    """
    if not 0 < top_k <= n_experts:
        raise ValueError(f"need 0 < top_k <= n_experts, got {top_k} and {n_experts}")
    if len(steps) != len(nonces):
        raise ValueError("one step per nonce")
    seeds = torch.tensor(
        [seed_from_string(f"{block_hash}_n{n}_route_layer_{layer}") for n in nonces],
        dtype=torch.int64,
    )
    start = murmur3_32(torch.tensor(list(steps), dtype=torch.int64), seeds) % n_experts
    rank = torch.arange(top_k, dtype=torch.int64)
    columns = (start.to(torch.int64)[:, None] + rank) % n_experts
    values = (base + top_k - rank).to(torch.float32).expand(len(nonces), top_k)
    logits = torch.full((len(nonces), n_experts), LADDER_OFF, dtype=torch.float32)
    return logits.scatter_(1, columns, values)


def ladder_gate_weights(ladder: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
    """Gate weights of PoC rows: the softmax of the ladder over the engine's selected experts."""
    return torch.softmax(ladder.gather(1, topk_ids.to(torch.int64)), dim=-1)


def seeded_expert_logits(
    block_hash: str,
    nonce: int,
    layer: int,
    step: int,
    n_experts: int,
    top_k: int,
    base: float = LADDER_BASE,
) -> torch.Tensor:
    """`routing_ladder` of one nonce: `[n_experts]`."""
    return routing_ladder(block_hash, [nonce], layer, [step], n_experts, top_k, base)[0]
