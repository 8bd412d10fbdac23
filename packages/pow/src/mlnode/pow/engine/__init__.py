"""PoC v2 inside a stock vLLM engine: the worker-side forward, the engine routes and their runner.

Loaded by vLLM from the `mlnode-pow` distribution (see `plugin.py`); imports only the standard
library, torch, pydantic, httpx, FastAPI and vLLM itself, since `.venv-vllm` has no mlnode-common.
"""
