"""Inference validation on stock vLLM, proxy side: forced-token replay and numeric token ids.

`replay` translates the network node's `enforced_tokens` / `enforced_str` into the engine
plugin's `vllm_xargs` (pure), `token_ids` rewrites vLLM's `token_id:N` spelling to the decimal
ids validators expect (pure), and `hook` ties both into the proxy's exchanges.
"""
