"""The engine plugin for forced-token replay, loaded by vLLM inside the engine's environment.

Its modules import only vLLM, torch, pydantic and the standard library: `make setup-vllm-env`
installs this package into `.venv-vllm` without its dependencies. `protocol` is what the proxy
and the plugin agree on; `plan` is pure; `v1` / `v2` are the logits processors of vLLM's two
model runners, `processor.ForcedTokens` picks one of them; `plugin` installs the post-sampling
swap that `processed_*` logprobs modes need.
"""
