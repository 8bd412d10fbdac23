"""A forcing step applied to a batch's tensors (shared by both model runners)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def force_logits(logits: torch.Tensor, rows: Sequence[int], ids: Sequence[int]) -> None:
    """Raw modes: leave only each forced row's id samplable, in place.

    At logit 0, so that it stays finite whatever masked it before.
    """
    if not rows:
        return
    row_t = torch.tensor(rows, dtype=torch.long, device=logits.device)
    id_t = torch.tensor(ids, dtype=torch.long, device=logits.device)
    logits[row_t] = float("-inf")
    logits[row_t, id_t] = 0.0


def swap_sampled(sampled: torch.Tensor, rows: Sequence[int], ids: Sequence[int]) -> None:
    """Processed modes: overwrite the sampled id of each forced row with its id, in place."""
    if not rows:
        return
    row_t = torch.tensor(rows, dtype=torch.long, device=sampled.device)
    sampled[row_t] = torch.tensor(ids, dtype=sampled.dtype, device=sampled.device)
