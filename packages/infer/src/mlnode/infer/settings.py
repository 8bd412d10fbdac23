"""Settings of mlnode-infer (`MLNODE_INFER_*`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from mlnode.common.settings import ENV_FILE, MLNodeBaseSettings
from mlnode.infer.routing import DEFAULT_RELAYED

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def inherited_env() -> dict[str, str]:
    """This process's environment, the base every engine's environment is built on."""
    return dict(os.environ)


class InferSettings(MLNodeBaseSettings):
    """Where the proxy listens, how engines are started, watched and restarted."""

    model_config = SettingsConfigDict(env_prefix="MLNODE_INFER_", env_file=ENV_FILE, extra="ignore")

    host: str = Field("127.0.0.1", description="Address the inference proxy binds to.")
    port: int = Field(
        5000, ge=1, le=65535, description="Inference port: /v1/* and /health for the network node."
    )
    python: str = Field(
        default_factory=lambda: sys.executable,
        description="Interpreter of the environment vLLM is installed in.",
    )
    engine_module: str = Field(
        "vllm.entrypoints.openai.api_server",
        description="Module run with `python -m` for each engine instance.",
    )
    engine_host: str = Field("127.0.0.1", description="Loopback address engines bind to.")
    gpus: list[int] | None = Field(
        None, description="CUDA device indices to use; unset means every visible device."
    )
    engine_env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for every engine (JSON)."
    )
    cpu_engine_env: dict[str, str] = Field(
        default_factory=lambda: {
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "OMP_WAIT_POLICY": "PASSIVE",
        },
        description=(
            "Environment variables for an engine that runs on CPU (no GPU), JSON. PASSIVE OpenMP "
            "threads leave CPU time to the proxy (spinning ones starve it)."
        ),
    )
    startup_timeout_s: float = Field(
        1800.0, gt=0, description="Seconds an engine may take to answer /health after its start."
    )
    health_interval_s: float = Field(
        2.0, gt=0, description="Seconds between health checks of running engines."
    )
    health_timeout_s: float = Field(5.0, gt=0, description="Timeout of one health check.")
    max_restarts: int = Field(
        2, ge=0, description="Automatic restarts per instance after it dies (0: never restart)."
    )
    stop_timeout_s: float = Field(
        3.0, gt=0, description="Seconds an engine gets after SIGTERM before its group is killed."
    )
    engine_shutdown_timeout_s: int = Field(
        2, ge=0, description="vLLM's own --shutdown-timeout: how long it drains open streams."
    )
    log_dir: Path | None = Field(
        None, description="Directory of the engines' log files; unset: <state dir>/infer."
    )
    log_tail_lines: int = Field(
        40, ge=1, description="Lines of an engine's log quoted in errors and status."
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="Proxy: connect timeout to an engine.")
    read_timeout_s: float | None = Field(
        None, description="Proxy: seconds to wait between bytes from an engine; unset: no limit."
    )
    max_idle_connections: int = Field(
        256, ge=1, description="Proxy: kept-alive connections per engine between requests."
    )
    max_header_bytes: int = Field(
        32 * 1024,
        ge=1024,
        description="Inference port: largest request head (request line and headers), bytes; "
        "431 beyond (nginx: 4 x 8 KiB).",
    )
    max_headers: int = Field(
        100, ge=8, description="Inference port: most header lines in a request; 431 beyond."
    )
    header_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Inference port: seconds from a request's first byte to the end of its head; "
        "408 and close beyond (nginx client_header_timeout).",
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Inference port: longest pause while a request body arrives; 408 and close.",
    )
    keepalive_timeout_s: float = Field(
        75.0,
        gt=0,
        description="Inference port: seconds a kept-alive connection may sit idle before it is "
        "closed (nginx keepalive_timeout).",
    )

    relayed_paths: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RELAYED),
        description=(
            "Engine API paths the inference port relays (JSON list); one ending in '/' is a "
            "prefix, any other matches itself and its sub-paths."
        ),
    )
    serve_on_rest_port: bool = Field(
        True,
        description=(
            "One-port mode: the REST port also relays those engine paths (through the same "
            "proxy), for network nodes configured with one base URL."
        ),
    )
    up_wait_s: float = Field(
        120.0,
        gt=0,
        description=(
            "POST /inference/up waits at most this long for the engines, then answers 503 "
            "'starting' with Retry-After (the newest network node retries 5xx for 15 min; the "
            "same request again joins the start and answers 200 once the engines serve)."
        ),
    )
    poc_request_timeout_s: float = Field(
        30.0, gt=0, description="PoC v2 fan-out: timeout of one call to an engine's /api/v1/pow."
    )
    poc_generate_timeout_s: float = Field(
        600.0,
        gt=0,
        description="PoC v2 fan-out: timeout of a forwarded /generate (wait=true computes).",
    )
    liveness_interval_s: float = Field(
        10.0, gt=0, description="Seconds between reads of each engine's /metrics (progress)."
    )
    liveness_stall_s: float = Field(
        90.0,
        gt=0,
        description=(
            "An engine with requests waiting or running whose iteration counter "
            "(vllm:iteration_tokens_total_count) has not moved for this long is unhealthy, "
            "even if /health answers 200."
        ),
    )
    liveness_cold_start_s: float = Field(
        3600.0,
        ge=0,
        description=(
            "Cold-start allowance: an engine that has not made progress yet since its start is "
            "judged by progress only after this many seconds (first loads, compilation)."
        ),
    )
    logprobs_mode: Literal["raw_logprobs", "processed_logprobs"] = Field(
        "processed_logprobs",
        description=(
            "vLLM's --logprobs-mode for every engine (the chain's ValidationParams.logprobs_mode); "
            "a request asking for another mode gets 503."
        ),
    )
    forcing: bool = Field(
        True,
        description=(
            "Start engines with the forced-replay plugin (--logits-processors); off: requests "
            "with enforced_tokens / enforced_str get 503."
        ),
    )
    rewrite_token_ids: bool = Field(
        True,
        description="Report logprob tokens as decimal ids (what validators require).",
    )
    max_body_bytes: int = Field(
        4 << 20,
        ge=1024,
        description=(
            "Inference port (and one-port relays): largest request body of any relayed engine "
            "path, bytes; 413 beyond (a declared length is refused unread). The network node's "
            "bodies are small; the engine's memory grows with what it is given to parse."
        ),
    )
    max_prompt_chars: int = Field(
        2 << 20,
        ge=1024,
        description="chat/completions: most characters in `prompt`, and in `messages`; 413.",
    )
    max_enforced_str_chars: int = Field(
        1 << 20,
        ge=1024,
        description="Forced replay: most characters of `enforced_str` (tokenized by the engine).",
    )
    max_enforced_tokens: int = Field(
        1 << 15,
        ge=16,
        description="Forced replay: most entries in `enforced_tokens.tokens`; 413 beyond.",
    )

    @field_validator("engine_host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        if value not in LOOPBACK_HOSTS:
            raise ValueError(f"engines must bind to loopback, not {value!r}")
        return value
