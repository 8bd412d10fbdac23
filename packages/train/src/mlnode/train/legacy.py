"""The network node's current start body, `{"train_config": {...}, "train_env": {...}}`.

Its `train_env` carries torch.distributed-style variables (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT, TASK_ID); they are mapped onto `TrainRequest`, and `train_config` may carry the
rest of the typed body. What cannot be mapped is answered 422 with the expected body.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationError

from mlnode.common.errors import InvalidRequest
from mlnode.train import legacy_2025
from mlnode.train.schemas import TrainRequest

EXPECTED = (
    "POST /api/v1/train/start expects {task_id, model: {path | config}, dataset: {path, seq_len}, "
    "rank, world_size, peers: [{peer_id, rank}], diloco, optim, checkpoint, seed}; a legacy body "
    "{train_config, train_env} may carry these fields in train_config, with RANK, WORLD_SIZE, "
    "MASTER_ADDR/MASTER_PORT (or the 2025-08 GLOBAL_RANK, GLOBAL_WORLD_SIZE, "
    "GLOBAL_ADDR/GLOBAL_PORT) and TASK_ID in train_env"
)


class LegacyTrainBody(BaseModel):
    """The network node's body: a free-form training config and an environment of strings."""

    train_config: dict[str, Any] = Field(description="Training settings (mapped onto the body).")
    train_env: dict[str, Any] = Field(description="RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, ...")


def _as_int(env: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        if env.get(key) not in (None, ""):
            try:
                return int(env[key])
            except (TypeError, ValueError) as exc:
                raise InvalidRequest(f"train_env.{key} is not an integer", param=key) from exc
    return None


def from_legacy(body: LegacyTrainBody) -> TrainRequest:
    """Map a legacy body onto `TrainRequest`, or raise 422 naming what is missing."""
    env = {str(k).upper(): v for k, v in body.train_env.items()}
    of_2025 = legacy_2025.is_2025_08(body.train_config)
    fields = legacy_2025.translate_config(body.train_config) if of_2025 else dict(body.train_config)
    rank = _as_int(env, "RANK", "NODE_RANK", *legacy_2025.ENV_RANK)
    world = _as_int(env, "WORLD_SIZE", "NNODES", *legacy_2025.ENV_WORLD)
    if rank is not None:
        fields["rank"] = rank
    if world is not None:
        fields["world_size"] = world
    addr_key, port_key = "MASTER_ADDR", "MASTER_PORT"
    if not env.get(addr_key) and env.get(legacy_2025.ENV_ADDR):
        addr_key, port_key = legacy_2025.ENV_ADDR, legacy_2025.ENV_PORT
    if env.get(addr_key):
        port = env.get(port_key)
        fields["master_addr"] = f"{env[addr_key]}:{port}" if port else str(env[addr_key])
    if env.get("TASK_ID") and "task_id" not in fields:
        fields["task_id"] = str(env["TASK_ID"])
    try:
        return TrainRequest.model_validate(fields)
    except ValidationError as exc:
        errors = exc.errors()
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:5]
        )
        if len(errors) > 5:
            problems += f"; and {len(errors) - 5} more"
        hint = f"; {legacy_2025.MISSING_HINT}" if of_2025 else ""
        raise InvalidRequest(
            f"legacy train body cannot be mapped ({problems}{hint}). {EXPECTED}"
        ) from exc


def to_train_request(body: TrainRequest | LegacyTrainBody) -> TrainRequest:
    """The typed request, whichever form arrived."""
    return body if isinstance(body, TrainRequest) else from_legacy(body)
