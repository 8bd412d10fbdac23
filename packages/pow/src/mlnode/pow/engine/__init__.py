"""PoC v2 inside a stock vLLM engine: the worker-side forward, the engine routes and their runner.

Loaded by vLLM from the `mlnode-pow` distribution (see `plugin.py`); imports only the standard
library, what vLLM brings (torch, pydantic, httpx, FastAPI) and common's engine-safe modules,
since the engine's interpreter has the project's packages without their dependencies
(`mlnode.common.engine_safe`).
"""
