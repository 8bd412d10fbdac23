"""Bodies of the models API, with the network node's field names (contract N10-N14)."""

from __future__ import annotations

import re
from enum import StrEnum

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils._validators import validate_repo_id
from pydantic import BaseModel, ConfigDict, Field, field_validator

#: A 40-hex commit, or a branch / tag name without path separators or `..`.
_REVISION = re.compile(r"[0-9a-f]{40}|[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ModelRef(BaseModel):
    """`{"hf_repo", "hf_commit"}`: a Hugging Face model repo at a commit (null: `main`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    hf_repo: str = Field(
        description="Repo id, `namespace/name` or `name`.", examples=["Qwen/Qwen3-0.6B"]
    )
    hf_commit: str | None = Field(
        None,
        description="Commit hash (or branch / tag); null: the `main` branch (every "
        "revision for DELETE).",
    )

    @field_validator("hf_repo")
    @classmethod
    def _repo_id(cls, value: str) -> str:
        try:
            validate_repo_id(value)
        except HFValidationError as exc:
            raise ValueError(f"not a Hugging Face repo id: {exc}") from exc
        return value

    @field_validator("hf_commit")
    @classmethod
    def _revision(cls, value: str | None) -> str | None:
        if value is not None and (not _REVISION.fullmatch(value) or ".." in value):
            raise ValueError("not a commit hash or a branch / tag name")
        return value


class ModelState(StrEnum):
    """Where a model stands in the cache."""

    DOWNLOADED = "DOWNLOADED"
    DOWNLOADING = "DOWNLOADING"
    NOT_FOUND = "NOT_FOUND"
    PARTIAL = "PARTIAL"


class DownloadProgress(BaseModel):
    """Bytes on disk of a model's files (blobs in flight included)."""

    downloaded_bytes: int = Field(description="Bytes written so far.")
    total_bytes: int | None = Field(None, description="Size of every file, once listed.")
    percent: float | None = Field(None, description="downloaded / total x 100.")
    elapsed_s: float | None = Field(None, description="Seconds since the download started.")


class ModelStatusResponse(BaseModel):
    """N10 `POST /models/status`."""

    model: ModelRef = Field(description="The model asked about.")
    status: ModelState = Field(description="DOWNLOADED, DOWNLOADING, NOT_FOUND or PARTIAL.")
    progress: DownloadProgress | None = Field(None, description="While downloading or partial.")
    error_message: str | None = Field(None, description="Why the last download failed.")


class DownloadResponse(BaseModel):
    """N11 `POST /models/download`."""

    task_id: str | None = Field(None, description="The download's id; null when none started.")
    status: str = Field(
        description="DOWNLOADING (202), DOWNLOADED (200, nothing to do) or "
        "IGNORED (200, the node is offline: HF_HUB_OFFLINE)."
    )
    model: ModelRef = Field(description="The model asked for.")


class DeleteResponse(BaseModel):
    """N12 `DELETE /models`."""

    status: str = Field(description="DELETED (a download in progress cancelled too) or NOT_FOUND.")
    model: ModelRef = Field(description="The model removed.")


class ModelEntry(BaseModel):
    """One cached revision."""

    model: ModelRef = Field(description="Repo and commit.")
    status: ModelState = Field(description="DOWNLOADED, DOWNLOADING or PARTIAL.")


class ModelListResponse(BaseModel):
    """N13 `GET /models/list`."""

    models: list[ModelEntry] = Field(description="Every revision in the cache or downloading.")


class SpaceResponse(BaseModel):
    """N14 `GET /models/space`."""

    cache_size_gb: float = Field(description="Bytes the cache holds, in GiB.")
    available_gb: float = Field(description="Free space on the cache's disk, in GiB.")
    cache_path: str = Field(description="The cache directory.")
