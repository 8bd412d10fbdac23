"""The 2025-08 network node's training body, mapped onto `TrainRequest` field names.

That client sends `train_config` = {project, name, description, group, tags, train: {micro_bs,
eval_interval}, data: {seq_length}, optim: {sched_type, batch_size, warmup_steps, total_steps,
adam_betas1, adam_betas2, weight_decay, lr}, diloco: {inner_steps}, ckpt: {interval, topk, path}}
and `train_env` = {TASK_ID, NODE_ID, STORE_API_URL, GLOBAL_ADDR, GLOBAL_PORT, GLOBAL_RANK,
GLOBAL_UNIQUE_ID, GLOBAL_WORLD_SIZE, BASE_PORT}, every value a string. What has a counterpart
is moved to it; labels and settings this trainer has no knob for are dropped (and logged); what
the body never carries (the model, the data file, the peers) stays missing, so validation names it.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: train_config keys of the 2025-08 body; any of them marks a body of that form.
MARKERS = frozenset({"project", "name", "description", "group", "tags", "train", "data", "ckpt"})
LABELS = ("project", "name", "description", "group", "tags")
#: 2025-08 optim key -> OptimConfig field.
OPTIM = {
    "lr": "lr",
    "weight_decay": "weight_decay",
    "warmup_steps": "warmup_steps",
    "total_steps": "total_steps",
    "batch_size": "batch_size",
}
_LOGGED_KEYS = 20
#: Environment names of the 2025-08 body, by TrainRequest field.
ENV_RANK = ("GLOBAL_RANK",)
ENV_WORLD = ("GLOBAL_WORLD_SIZE",)
ENV_ADDR, ENV_PORT = "GLOBAL_ADDR", "GLOBAL_PORT"
MISSING_HINT = (
    "the 2025-08 body carries no model, data file or peers: add train_config.model "
    "{path | config}, train_config.dataset {path} and, with GLOBAL_WORLD_SIZE > 1, "
    "train_config.peers [{peer_id, rank}] (peers registered through /api/v1/peers)"
)


def is_2025_08(config: dict[str, Any]) -> bool:
    """True when `train_config` has the 2025-08 shape."""
    optim = config.get("optim")
    return bool(MARKERS & config.keys()) or (isinstance(optim, dict) and "sched_type" in optim)


def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.pop(key, None)
    return dict(value) if isinstance(value, dict) else {}


def translate_config(config: dict[str, Any]) -> dict[str, Any]:
    """A 2025-08 `train_config` with its settings under `TrainRequest`'s names."""
    fields = dict(config)
    dropped = [k for k in LABELS if fields.pop(k, None) is not None]
    train, data = _section(fields, "train"), _section(fields, "data")
    optim, diloco, ckpt = (_section(fields, k) for k in ("optim", "diloco", "ckpt"))
    mapped_optim = {new: optim.pop(old) for old, new in OPTIM.items() if old in optim}
    if "micro_bs" in train:
        mapped_optim["micro_batch_size"] = train.pop("micro_bs")
    dropped += [f"optim.{k}" for k in optim] + [f"train.{k}" for k in train]
    fields["optim"] = mapped_optim
    fields["diloco"] = {k: diloco.pop(k) for k in ("inner_steps",) if k in diloco}
    dropped += [f"diloco.{k}" for k in diloco]
    if "seq_length" in data:
        dataset = fields.setdefault("dataset", {})
        if isinstance(dataset, dict):
            dataset.setdefault("seq_len", data.pop("seq_length"))
    checkpoint = {}
    if ckpt.get("path"):
        checkpoint["dir"] = ckpt.pop("path")
    if ckpt.get("topk"):
        checkpoint["keep"] = ckpt.pop("topk")
    dropped += [f"ckpt.{k}" for k in ckpt]
    fields["checkpoint"] = checkpoint
    if dropped:
        # Keys are the caller's: repr() escapes newlines (no forged log lines), and few are shown.
        shown = [key[:64] for key in dropped[:_LOGGED_KEYS]]
        log.info(
            "2025-08 train_config: no counterpart for %d keys (ignored): %r", len(dropped), shown
        )
    return fields
