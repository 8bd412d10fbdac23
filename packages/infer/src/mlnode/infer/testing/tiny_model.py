"""Build a tiny random Llama and a word-level tokenizer in a directory (no downloads).

Self-contained (transformers, tokenizers and torch only), so any environment that has vLLM can
run it as a script: `python tiny_model.py <out_dir>`. The vocabulary size of the model equals the
tokenizer's, and head_dim is 64 (the CPU attention backend refuses smaller heads).
"""

from __future__ import annotations

import sys
from pathlib import Path

WORDS = (
    "the a an is was are be to of and in on at for with it this that we you they he she "
    "cat dog bird fish tree sun moon sky sea river hello world yes no one two three red blue "
    "green big small good bad day night run walk see say"
).split()
SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "system", "user", "assistant", ":", "."]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] }} : "
    "{{ message['content'] }} . {% endfor %}{% if add_generation_prompt %}assistant : {% endif %}"
)


def build(out_dir: Path) -> Path:
    """Write config, safetensors weights and tokenizer files into `out_dir`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=64,
        max_position_embeddings=512,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        pad_token_id=vocab["<pad>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":
    sys.stdout.write(f"{build(Path(sys.argv[1]))}\n")
