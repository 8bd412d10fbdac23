"""Settings of the federated metrics exporter (`MLNODE_METRICS_*`, or gonka's `GONKA_METRICS`)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from mlnode.common.settings import ENV_FILE, MLNodeBaseSettings

log = logging.getLogger(__name__)


class MetricsSettings(MLNodeBaseSettings):
    """Whether `/api/v1/metrics` exports, and how engines are scraped behind it."""

    model_config = SettingsConfigDict(
        env_prefix="MLNODE_METRICS_", env_file=ENV_FILE, extra="ignore", populate_by_name=True
    )

    export: str = Field(
        "full",
        validation_alias=AliasChoices("MLNODE_METRICS_EXPORT", "GONKA_METRICS", "export"),
        description="full: /api/v1/metrics exports schema v1; off: it answers 404 (the "
        "federation then leaves the node out). Other values read as full, with a warning.",
    )
    scrape_interval_s: float = Field(
        5.0, gt=0, description="Seconds between background scrapes of engines, NVML and host."
    )
    scrape_timeout_s: float = Field(3.0, gt=0, description="Deadline of one engine scrape.")
    max_engine_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest engine /metrics body read; skipped beyond."
    )
    max_series_per_replica: int = Field(
        500, ge=10, description="Series kept per engine instance (the federation caps 5000)."
    )

    @field_validator("export", mode="before")
    @classmethod
    def _full_or_off(cls, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in ("full", "off"):
            log.warning("metrics export %r is neither full nor off: exporting full", value)
            return "full"
        return text

    @property
    def enabled(self) -> bool:
        """True unless export is off."""
        return self.export == "full"
