"""The inner loop: AdamW with gradient accumulation; bf16 autocast on GPU, fp32 on CPU.

When a torch.distributed process group is up (several devices of one node: `mlnode.train.local`
starts one process per device, or torchrun does), the model is wrapped in DistributedDataParallel
so the local ranks average gradients every step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mlnode.train.diloco.math import Tensors
from mlnode.train.model import parameters_of
from mlnode.train.schemas import OptimConfig

BETAS = (0.9, 0.95)
FINAL_LR_FRACTION = 0.1


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak at `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


class InnerLoop:
    """Owns the model's inner AdamW and runs one optimizer step per call."""

    def __init__(self, model: torch.nn.Module, config: OptimConfig, device: torch.device) -> None:
        self.model = model.to(device)
        self.device = device
        self.config = config
        self.params = parameters_of(self.model)
        self.optimizer = torch.optim.AdamW(
            self.params.values(), lr=config.lr, betas=BETAS, weight_decay=config.weight_decay
        )
        self.step = 0
        self.forward_model: torch.nn.Module = model
        if dist.is_available() and dist.is_initialized():
            self.distribute()

    def distribute(self) -> None:
        """Average gradients over the default process group (a collective: every rank calls it)."""
        index = self.device.index
        ids = [index] if self.device.type == "cuda" and index is not None else None
        self.forward_model = DistributedDataParallel(self.model, device_ids=ids)

    def undistribute(self) -> None:
        """Train alone again (after the process group is gone)."""
        self.forward_model = self.model

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _micro_batches(self, batch: torch.Tensor) -> Iterator[torch.Tensor]:
        size = self.config.micro_batch_size or self.config.batch_size
        yield from torch.split(batch, size)

    def train_step(self, batch: torch.Tensor) -> float:
        """One AdamW step over `batch` ([batch, seq_len + 1] token ids); returns the mean loss."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * lr_factor(
                self.step, self.config.warmup_steps, self.config.total_steps
            )
        micro = list(self._micro_batches(batch.to(self.device)))
        total = 0.0
        for chunk in micro:
            with self._autocast():
                loss = self._loss(self.forward_model, chunk) / len(micro)
            torch.autograd.backward(loss)
            total += float(loss.detach())
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return total

    @staticmethod
    def _loss(model: torch.nn.Module, chunk: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=chunk[:, :-1]).logits
        return torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1)
        )

    @torch.no_grad()
    def evaluate(self, windows: torch.Tensor) -> float | None:
        """Mean loss over eval sequences; None when there are none."""
        if windows.numel() == 0:
            return None
        self.model.eval()
        size = self.config.micro_batch_size or self.config.batch_size
        losses = []
        for chunk in torch.split(windows.to(self.device), size):
            with self._autocast():
                losses.append(float(self._loss(self.model, chunk)) * chunk.shape[0])
        return float(sum(losses) / windows.shape[0])

    def weights(self) -> Tensors:
        """Current parameters (detached views)."""
        return {name: p.detach() for name, p in self.params.items()}

    @torch.no_grad()
    def load_weights(self, tensors: Tensors) -> None:
        """Overwrite parameters in place."""
        for name, param in self.params.items():
            param.copy_(tensors[name].to(param.device, param.dtype))

    def optimizer_state(self) -> Tensors:
        """AdamW moments and step counts, flat by parameter name (for safetensors)."""
        flat: Tensors = {}
        for name, param in self.params.items():
            for key, value in self.optimizer.state.get(param, {}).items():
                flat[f"{name}::{key}"] = torch.as_tensor(value).detach().cpu()
        return flat

    def load_optimizer_state(self, flat: Tensors, step: int) -> None:
        """Restore what `optimizer_state` produced."""
        for name, param in self.params.items():
            state = {
                key.split("::", 1)[1]: value.to(param.device)
                for key, value in flat.items()
                if key.split("::", 1)[0] == name
            }
            if state:
                state["step"] = state["step"].float().cpu()
                self.optimizer.state[param] = state
        self.step = step
