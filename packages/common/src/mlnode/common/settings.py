"""Node-wide settings, read from the environment and `.env` (environment variables win).

Each feature package keeps its own settings class with its own prefix (`MLNODE_POW_`, ...);
`mlnode.api.settings.MLNodeSettings` composes them. Nothing else in the project reads `os.environ`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlnode.common.state_dir import ensure_private_dir
from mlnode.common.urlprefix import DEFAULT_PATTERN

ENV_FILE = ".env"


def default_state_dir() -> Path:
    """Per-user state directory, so a node never writes into the current directory."""
    return Path.home() / ".local" / "state" / "mlnode"


class LogFormat(StrEnum):
    """How log records are rendered."""

    PLAIN = "plain"
    JSON = "json"


class MLNodeBaseSettings(BaseSettings):
    """Base of every settings class: `.env` support, unknown keys ignored (other packages' keys)."""

    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(
        env_file=ENV_FILE, env_file_encoding="utf-8", extra="ignore"
    )


class NodeSettings(MLNodeBaseSettings):
    """The MLNode process itself: where it listens, keeps state and logs."""

    model_config = SettingsConfigDict(env_prefix="MLNODE_", env_file=ENV_FILE, extra="ignore")

    host: str = Field("127.0.0.1", description="Address the REST API binds to.")
    port: int = Field(8080, ge=1, le=65535, description="Port of the REST API.")
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Directory for the node's keys, known peers, logs and job state.",
    )
    log_level: str = Field("INFO", description="Python log level name.")
    log_format: LogFormat = Field(LogFormat.PLAIN, description="plain or json log lines.")
    api_token: SecretStr | None = Field(
        None,
        description=(
            "When set, every route of the REST and inference ports but /livez (and /health on "
            "the inference port) needs 'Authorization: Bearer <token>'."
        ),
    )
    api_token_file: Path | None = Field(
        None,
        description=(
            "File holding the API token, used when MLNODE_API_TOKEN is unset: created with a "
            "random token (mode 0600) on first start, its path logged (never the token). "
            "Relative: under the state directory."
        ),
    )
    shutdown_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a service gets to stop during shutdown."
    )
    version_prefix_pattern: str = Field(
        DEFAULT_PATTERN,
        description=(
            "Regular expression of the '/{version}' path segment the network node puts in front "
            "of every URL (e.g. /v3.0.8/api/v1/state); stripped on the REST and inference ports. "
            "Empty: off."
        ),
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest REST request body in bytes; larger ones are answered 413 unread.",
    )
    max_json_values: int = Field(
        1 << 20,
        ge=1024,
        description="Most values (commas) in a REST JSON body; 422 before it is parsed. Engine "
        "paths relayed by the REST port are exempt (MLNODE_INFER_MAX_BODY_BYTES bounds them).",
    )
    max_header_bytes: int = Field(
        32 * 1024,
        ge=1024,
        description="Largest REST request head (request line and headers); 431 beyond.",
    )
    max_headers: int = Field(100, ge=8, description="Most header lines of a REST request; 431.")
    header_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Seconds a REST client has to send a request head from its connection or "
        "first byte; 408 and close beyond.",
    )
    allow_unauthenticated_public: bool = Field(
        False,
        description="Serve the REST API on a non-loopback address without MLNODE_API_TOKEN "
        "(refused at start otherwise).",
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    @field_validator("version_prefix_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @field_validator("api_token", "api_token_file", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    def ensure_state_dir(self) -> Path:
        """Create the state directory (owner-only), or check that the existing one is private."""
        return ensure_private_dir(self.state_dir)
