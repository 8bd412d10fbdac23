"""Build or load the causal LM to train, and its tokenizer (bytes when the model has none)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from mlnode.common.errors import InvalidRequest
from mlnode.train.schemas import ModelSpec

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

Tokenize = Callable[[str], list[int]]


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255: needs no files, fits any model with vocab_size >= 256."""

    vocab_size = 256

    def __call__(self, text: str) -> list[int]:
        """Token ids of `text`."""
        return list(text.encode("utf-8"))


def build_model(spec: ModelSpec, seed: int) -> PreTrainedModel:
    """The model in fp32 on CPU: loaded from a local directory, or built from a config."""
    if spec.path is not None:
        return _load_local(Path(spec.path))
    kwargs: dict[str, Any] = dict(spec.config or {})
    model_type = str(kwargs.pop("model_type", "llama"))
    try:
        config = AutoConfig.for_model(model_type, **kwargs)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"model.config is not usable: {exc}", param="model.config") from exc
    torch.manual_seed(seed)
    try:
        model: PreTrainedModel = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            config, dtype=torch.float32
        )
    except (ValueError, KeyError) as exc:
        raise InvalidRequest(f"no causal LM for model.config: {exc}", param="model.config") from exc
    return model


def _load_local(path: Path) -> PreTrainedModel:
    if not (path / "config.json").is_file():
        raise InvalidRequest(f"model.path {path} is not a model directory", param="model.path")
    try:
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, use_safetensors=True, dtype=torch.float32
        )
    except (OSError, ValueError) as exc:
        raise InvalidRequest(
            f"model.path {path} cannot be loaded: {exc}", param="model.path"
        ) from exc
    return model


def load_tokenizer(spec: ModelSpec, model: PreTrainedModel) -> Tokenize:
    """The model directory's tokenizer when it has one, else bytes; checked against the vocab."""
    vocab = int(model.config.vocab_size)
    if spec.path is not None and any((Path(spec.path) / f).exists() for f in TOKENIZER_FILES):
        tokenizer = AutoTokenizer.from_pretrained(spec.path, local_files_only=True)
        size = len(tokenizer)
        encode: Tokenize = lambda text: list(tokenizer(text)["input_ids"])  # noqa: E731
    else:
        size = ByteTokenizer.vocab_size
        encode = ByteTokenizer()
    if size > vocab:
        raise InvalidRequest(
            f"the tokenizer has {size} tokens but the model's vocab_size is {vocab}", param="model"
        )
    return encode


def parameters_of(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Trainable parameters by name (tied weights once)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}
