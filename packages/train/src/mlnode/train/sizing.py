"""How much memory a training request would take, judged before anything is built.

`POST /train/start` names a model by a free-form transformers config; built as asked, a config
of any size would be allocated on the spot. The estimate reads the config's sizes (with the
model type's defaults, so `{}` is a 7B Llama), counts parameters analytically, adds what a
DiLoCo worker keeps per parameter, the activations of one micro-batch and the dataset, and
refuses with 422 what does not fit the node's budget. Only a config that passes is then built on
the `meta` device (no storage) to count its parameters exactly and check again.

Per parameter a worker keeps fp32 weights, gradients, two AdamW moments, the last synced
weights and the outer momentum (6 x 4 bytes), plus an error-feedback buffer with compression,
plus with the loss gate every worker's pseudo-gradient (world_size x 4 bytes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlnode.common.errors import InvalidRequest
from mlnode.train.schemas import TrainRequest

BYTES_PER_PARAM = 24
FEEDBACK_BYTES_PER_PARAM = 4
#: The loss gate keeps every worker's decoded fp32 pseudo-gradient until it has scored them.
GATE_BYTES_PER_PARAM_PER_WORKER = 4
#: Python objects of one decoder layer's modules, counted apart from their tensors.
LAYER_OVERHEAD_BYTES = 64 * 1024
#: Bytes of memory per byte of a text dataset: the text, its token list and the token tensor.
TEXT_DATASET_FACTOR = 20
TOKEN_DATASET_FACTOR = 4
MAX_CONFIG_FILE_BYTES = 1 << 20
_LEARNED_POSITIONS = frozenset({"gpt2", "gpt_bigcode", "gpt_neo", "opt", "biogpt", "xglm"})

_SIZE_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "vocab_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "num_local_experts",
    "num_experts",
    "n_routed_experts",
)


@dataclass(frozen=True)
class Estimate:
    """Memory a request would take, in parts, and the model field that drives its size."""

    params: int
    state_bytes: int
    activation_bytes: int
    dataset_bytes: int
    overhead_bytes: int
    model_field: str

    @property
    def total(self) -> int:
        """Every part together."""
        return self.state_bytes + self.activation_bytes + self.dataset_bytes + self.overhead_bytes


def _size(config: Any, name: str, where: str, default: int | None = None) -> int:
    value = getattr(config, name, None)
    if value is None:
        value = default
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(
            f"{where}.{name} must be a non-negative integer, got {value!r}", param=f"{where}.{name}"
        )
    return value


def config_sizes(config: Any, where: str) -> dict[str, int]:
    """The sizes that decide a decoder's parameter count, validated as integers."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    sizes = {name: _size(text, name, where) for name in _SIZE_FIELDS}
    heads = max(sizes["num_attention_heads"], 1)
    hidden = sizes["hidden_size"]
    sizes["head_dim"] = sizes["head_dim"] or hidden // heads
    sizes["num_key_value_heads"] = sizes["num_key_value_heads"] or heads
    sizes["intermediate_size"] = sizes["intermediate_size"] or _size(
        text, "n_inner", where, 4 * hidden
    )
    sizes["experts"] = max(
        sizes["num_local_experts"], sizes["num_experts"], sizes["n_routed_experts"], 1
    )
    sizes["tied"] = int(bool(getattr(text, "tie_word_embeddings", False)))
    sizes["learned_positions"] = int(getattr(text, "model_type", "") in _LEARNED_POSITIONS)
    return sizes


def count_params(sizes: Mapping[str, int]) -> dict[str, int]:
    """Parameters by part: embeddings (and head), layers' attention and MLPs."""
    hidden, head_dim = sizes["hidden_size"], sizes["head_dim"]
    embed = sizes["vocab_size"] * hidden * (1 if sizes["tied"] else 2)
    embed += sizes["max_position_embeddings"] * hidden * sizes["learned_positions"]
    attention = (
        2 * hidden * head_dim * (sizes["num_attention_heads"] + sizes["num_key_value_heads"])
    )
    mlp = 3 * hidden * sizes["intermediate_size"] * sizes["experts"]
    layers = sizes["num_hidden_layers"]
    return {
        "vocab_size": embed,
        "num_hidden_layers": layers * (attention + 4 * hidden),
        "intermediate_size": layers * mlp,
    }


def activation_bytes(request: TrainRequest, sizes: Mapping[str, int]) -> int:
    """One micro-batch's activations kept for backward, attention scores and logits included."""
    micro = request.optim.micro_batch_size or request.optim.batch_size
    seq = request.dataset.seq_len
    per_layer = 16 * seq * sizes["hidden_size"] + sizes["num_attention_heads"] * seq * seq
    logits = 3 * seq * sizes["vocab_size"]
    return 4 * micro * (sizes["num_hidden_layers"] * per_layer + logits)


def dataset_bytes(path: Path) -> int:
    """Memory the dataset takes once read; 422 when it is not a regular file."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise InvalidRequest(
            f"dataset.path {path} cannot be read: {exc}", param="dataset.path"
        ) from exc
    if not path.is_file():
        raise InvalidRequest(f"dataset.path {path} is not a regular file", param="dataset.path")
    factor = (
        TOKEN_DATASET_FACTOR if path.suffix in (".npy", ".safetensors") else TEXT_DATASET_FACTOR
    )
    return stat.st_size * factor


def read_model_config(request: TrainRequest) -> tuple[dict[str, Any], str] | None:
    """The config dict the model will be built from, and the field it came from."""
    spec = request.model
    if spec.config is not None:
        return dict(spec.config), "model.config"
    if spec.path is None:
        return None
    file = Path(spec.path) / "config.json"
    try:
        if not file.is_file():
            return None
        if file.stat().st_size > MAX_CONFIG_FILE_BYTES:
            raise InvalidRequest(f"{file} is larger than 1 MiB", param="model.path")
        loaded = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequest(
            f"model.path {file} is not readable JSON: {exc}", param="model.path"
        ) from exc
    if not isinstance(loaded, dict):
        raise InvalidRequest(f"model.path {file} is not a JSON object", param="model.path")
    return loaded, "model.path"


def estimate(request: TrainRequest, config: Any, where: str, params: int | None = None) -> Estimate:
    """The estimate for `request` with its model config built (not the model)."""
    sizes = config_sizes(config, where)
    parts = count_params(sizes)
    total_params = params if params is not None else sum(parts.values())
    per_param = BYTES_PER_PARAM + (
        FEEDBACK_BYTES_PER_PARAM if request.diloco.compression.value != "none" else 0
    )
    if request.diloco.robust.gate and request.world_size > 1:
        per_param += GATE_BYTES_PER_PARAM_PER_WORKER * request.world_size
    acts = activation_bytes(request, sizes)
    data = dataset_bytes(Path(request.dataset.path))
    overhead = LAYER_OVERHEAD_BYTES * sizes["num_hidden_layers"] * sizes["experts"]
    biggest = max(parts, key=lambda k: parts[k])
    model_field = f"{where}.{biggest}" if where == "model.config" else where
    if overhead > total_params * per_param and where == "model.config":
        model_field = f"{where}.num_hidden_layers"
    return Estimate(total_params, total_params * per_param, acts, data, overhead, model_field)


def culprit(found: Estimate, budget: int) -> str:
    """The field to reduce: the model when it alone is too big, else the larger of the rest."""
    if found.state_bytes + found.overhead_bytes > budget:
        return found.model_field
    if found.activation_bytes >= found.dataset_bytes:
        return "dataset.seq_len"
    return "dataset.path"


def refuse_if_too_big(found: Estimate, budget: int, where: str) -> None:
    """422 naming the field that drives the memory, when the estimate passes the budget."""
    if found.total <= budget:
        return
    gib = 1 << 30
    field = culprit(found, budget)
    raise InvalidRequest(
        f"{where} would need about {found.total / gib:.1f} GiB to train "
        f"({found.params:,} parameters x {BYTES_PER_PARAM} B, activations "
        f"{found.activation_bytes / gib:.1f} GiB, dataset {found.dataset_bytes / gib:.1f} GiB), "
        f"more than this node's budget of {budget / gib:.1f} GiB "
        f"(MLNODE_TRAIN_MAX_MEMORY_BYTES); reduce {field}",
        param=field,
    )


def build_config(values: Mapping[str, Any], where: str) -> Any:
    """The transformers config `values` describe (no weights); 422 when it is not usable."""
    from transformers import AutoConfig

    kwargs = dict(values)
    model_type = kwargs.pop("model_type", "llama")
    if not isinstance(model_type, str):
        raise InvalidRequest(f"{where}.model_type must be a string", param=f"{where}.model_type")
    try:
        return AutoConfig.for_model(model_type, **kwargs)
    except Exception as exc:  # a config from outside may fail in any way: 422
        named = re.search(r"field '(\w+)'", str(exc))
        param = f"{where}.{named.group(1)}" if named else where
        raise InvalidRequest(f"{where} is not usable: {exc}", param=param) from exc


def exact_params(config: Any, where: str) -> int:
    """Parameters of the causal LM `config` describes, built on the meta device (no storage)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    except Exception as exc:  # whatever a config from outside breaks: 422
        raise InvalidRequest(f"no causal LM for {where}: {exc}", param=where) from exc
    return sum(p.numel() for p in model.parameters())


def refuse_if_too_deep(config: Any, where: str, max_layers: int) -> None:
    """422 for a model with more layers (or expert layers) than the node builds in good time.

    The memory estimate counts each layer's Python objects, but not the time: 60,000 layers of
    hidden size 8 fit 4 GiB and took 90 s of the node's CPU (and GIL) to build on `meta`.
    """
    sizes = config_sizes(config, where)
    layers = sizes["num_hidden_layers"]
    # Experts of modern MoE classes are fused tensors: a layer of them costs little more to build.
    if layers > max_layers:
        field = f"{where}.num_hidden_layers" if where == "model.config" else where
        raise InvalidRequest(
            f"{where} has {layers} layers, more than this node builds ({max_layers}, "
            "MLNODE_TRAIN_MAX_LAYERS); reduce num_hidden_layers",
            param=field,
        )


def check_request_fits(
    request: TrainRequest, budget: int, max_layers: int = 512
) -> Estimate | None:
    """Refuse (422) a request whose model, activations and data would not fit in `budget` bytes.

    Blocking (reads files, may build a meta model): call it off the event loop.
    """
    data = dataset_bytes(Path(request.dataset.path))
    found = read_model_config(request)
    if found is None:
        refuse_if_too_big(Estimate(0, 0, 0, data, 0, "model.path"), budget, "dataset.path")
        return None
    values, where = found
    config = build_config(values, where)
    refuse_if_too_deep(config, where, max_layers)
    rough = estimate(request, config, where)
    refuse_if_too_big(rough, budget, where)
    exact = estimate(request, config, where, exact_params(config, where))
    refuse_if_too_big(exact, budget, where)
    return exact
