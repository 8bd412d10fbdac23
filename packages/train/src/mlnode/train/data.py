"""Local training data: read a text, jsonl or token file, tokenize, and cut per-rank batches.

Batch k of a rank depends only on (seed, rank, k), so a resumed worker continues where it left.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel

from mlnode.common.errors import InvalidRequest
from mlnode.train.model import Tokenize, load_tokenizer
from mlnode.train.schemas import DatasetSpec, TrainRequest

TOKEN_SUFFIXES = (".npy", ".safetensors")


def read_tokens(spec: DatasetSpec, tokenize: Tokenize) -> torch.Tensor:
    """The whole corpus as one int64 tensor of token ids."""
    path = Path(spec.path)
    if not path.is_file():
        raise InvalidRequest(f"dataset.path {path} is not a file", param="dataset.path")
    try:
        if path.suffix == ".npy":
            tokens = torch.from_numpy(
                np.load(path, allow_pickle=False).astype(np.int64).reshape(-1)
            )
        elif path.suffix == ".safetensors":
            tensors = load_file(path)
            if "tokens" not in tensors:
                raise InvalidRequest("a token file needs a 'tokens' tensor", param="dataset.path")
            tokens = tensors["tokens"].to(torch.int64).reshape(-1)
        else:
            tokens = torch.tensor(tokenize(_read_text(path, spec.text_field)), dtype=torch.int64)
    except (OSError, ValueError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"dataset.path {path} cannot be read: {exc}", param="dataset") from exc
    return tokens


def _read_text(path: Path, field: str) -> str:
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".jsonl":
        return text
    parts = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise ValueError(f"line {number} has no string field {field!r}")
            parts.append(record[field])
    return "\n".join(parts)


class TokenBatches:
    """Non-overlapping windows of `seq_len + 1` tokens; rank r owns windows r, r + world, ..."""

    def __init__(self, tokens: torch.Tensor, seq_len: int, rank: int, world: int, seed: int):
        count = (tokens.numel() - 1) // seq_len
        starts = torch.arange(count) * seq_len
        self.windows = (
            torch.stack([tokens[s : s + seq_len + 1] for s in starts.tolist()]) if count else None
        )
        self.mine = torch.arange(rank, count, world)
        if self.windows is None or self.mine.numel() == 0:
            raise InvalidRequest(
                f"the dataset has {tokens.numel()} tokens: too few for a {seq_len}-token sequence "
                f"on each of {world} workers",
                param="dataset",
            )
        self.seed = seed * 1_000_003 + rank

    def batch(self, step: int, size: int) -> torch.Tensor:
        """Sequences of inner step `step` (shape [size, seq_len + 1]); reshuffled every epoch."""
        owned = self.mine.numel()
        picks = []
        for i in range(step * size, (step + 1) * size):
            epoch, offset = divmod(i, owned)
            order = torch.randperm(
                owned, generator=torch.Generator().manual_seed(self.seed + epoch)
            )
            picks.append(self.mine[order[offset]])
        assert self.windows is not None
        return self.windows[torch.stack(picks)]


def worker_data(request: TrainRequest, model: PreTrainedModel) -> tuple[TokenBatches, torch.Tensor]:
    """This worker's training batches and the eval sequences, as every local rank builds them."""
    tokens = read_tokens(request.dataset, load_tokenizer(request.model, model))
    seq_len = request.dataset.seq_len
    train_tokens, eval_tokens = split_eval(tokens, request.dataset.eval_fraction, seq_len)
    batches = TokenBatches(train_tokens, seq_len, request.rank, request.world_size, request.seed)
    return batches, eval_windows(eval_tokens, seq_len)


def split_eval(
    tokens: torch.Tensor, fraction: float, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, eval) token tensors; eval is the corpus tail (at least one sequence if asked)."""
    if fraction <= 0:
        return tokens, tokens[:0]
    held = max(int(tokens.numel() * fraction), seq_len + 1)
    if held >= tokens.numel():
        return tokens, tokens[:0]
    return tokens[:-held], tokens[-held:]


def eval_windows(tokens: torch.Tensor, seq_len: int, limit: int = 64) -> torch.Tensor:
    """Up to `limit` eval sequences of `seq_len + 1` tokens."""
    count = min((tokens.numel() - 1) // seq_len, limit)
    if count <= 0:
        return torch.empty(0, seq_len + 1, dtype=torch.int64)
    return torch.stack([tokens[i * seq_len : i * seq_len + seq_len + 1] for i in range(count)])
