"""Settings of the model management API (`MLNODE_MODELS_*`)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import constants
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mlnode.common.settings import ENV_FILE, MLNodeBaseSettings


def _hub_cache() -> Path:
    # As huggingface_hub resolves it: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub.
    return Path(constants.HF_HUB_CACHE)


def _hub_offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE)


class ModelsSettings(MLNodeBaseSettings):
    """Where models are cached and how downloads are bounded."""

    model_config = SettingsConfigDict(
        env_prefix="MLNODE_MODELS_", env_file=ENV_FILE, extra="ignore"
    )

    cache_dir: Path = Field(
        default_factory=_hub_cache,
        description="Hugging Face hub cache the models API manages; default as huggingface_hub "
        "resolves it (HF_HUB_CACHE, else HF_HOME/hub), the cache vLLM loads from.",
    )
    offline: bool = Field(
        default_factory=_hub_offline,
        description="Downloads answer IGNORED (default: HF_HUB_OFFLINE).",
    )
    max_downloads: int = Field(3, ge=1, le=16, description="Downloads at once; 429 beyond.")
    download_timeout_s: float = Field(
        24 * 3600.0, gt=0, description="A download still running after this long is killed."
    )
    download_workers: int = Field(8, ge=1, le=64, description="Files one download fetches at once.")
