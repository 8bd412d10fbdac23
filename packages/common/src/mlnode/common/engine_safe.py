"""What code running inside a vLLM engine may import: the engine boundary.

The engines run in their own interpreter, which has vLLM's dependencies and the project's
packages installed without theirs (`make setup-vllm-env`, `docker/install-mlnode.sh`). So the
plugin modules (PoC v2 in mlnode-pow, forced replay in mlnode-infer) and the modules of
mlnode-common they use import only the standard library and what vLLM brings. Checked by a unit
test in each plugin package (`mlnode.common.testing.imports`).
"""

from __future__ import annotations

#: Modules of mlnode-common that import only the standard library, httpx, pydantic and one another.
ENGINE_SAFE_COMMON = frozenset(
    {
        "mlnode.common.callbacks",
        "mlnode.common.engine_safe",
        "mlnode.common.errors",
        "mlnode.common.hygiene",
        "mlnode.common.settings",
        "mlnode.common.state_dir",
        "mlnode.common.urlprefix",
    }
)

#: Top-level packages, besides the standard library, that vLLM installs with itself.
ENGINE_THIRD_PARTY = frozenset(
    {
        "fastapi",
        "httpx",
        "numpy",
        "pydantic",
        "pydantic_settings",
        "safetensors",
        "starlette",
        "torch",
        "transformers",
        "vllm",
    }
)

#: The project's engine-side code (the plugins and their pure maths).
ENGINE_PACKAGES = ("mlnode.pow.engine", "mlnode.pow.poc", "mlnode.infer.forcing")
