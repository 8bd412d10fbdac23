"""Routes of the models API (contract N10-N14), mounted under /api/v1."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from mlnode.api.models.downloads import ModelManager
from mlnode.api.models.schemas import (
    DeleteResponse,
    DownloadResponse,
    ModelListResponse,
    ModelRef,
    ModelStatusResponse,
    SpaceResponse,
)


def get_models(request: Request) -> ModelManager:
    """The app's model manager."""
    manager: ModelManager = request.app.state.models
    return manager


ModelsDep = Annotated[ModelManager, Depends(get_models)]

router = APIRouter(prefix="/models", tags=["models"])
_BAD_NAME: dict[int | str, dict[str, Any]] = {
    422: {"description": "hf_repo or hf_commit is not a Hugging Face name."}
}


@router.post("/status", operation_id="models_status", responses=_BAD_NAME)
async def models_status(body: ModelRef, models: ModelsDep) -> ModelStatusResponse:
    """DOWNLOADED, DOWNLOADING (with progress), PARTIAL or NOT_FOUND."""
    return await models.status(body)


@router.post(
    "/download",
    operation_id="models_download",
    status_code=202,
    responses={
        **_BAD_NAME,
        200: {"description": "Nothing started: DOWNLOADED already, or IGNORED offline."},
        409: {"description": "The model is downloading already."},
        429: {"description": "As many downloads run as MLNODE_MODELS_MAX_DOWNLOADS allows."},
    },
)
async def models_download(
    body: ModelRef, models: ModelsDep, response: Response
) -> DownloadResponse:
    """Download into the hub cache in the background; poll /models/status."""
    response.status_code, answer = await models.download(body)
    return answer


@router.delete("", operation_id="models_delete", responses=_BAD_NAME)
async def models_delete(body: ModelRef, models: ModelsDep) -> DeleteResponse:
    """Cancel a download and remove the revision (every revision when hf_commit is null)."""
    return await models.delete(body)


@router.get("/list", operation_id="models_list")
async def models_list(models: ModelsDep) -> ModelListResponse:
    """Every cached revision with its state."""
    return await models.list()


@router.get("/space", operation_id="models_space")
async def models_space(models: ModelsDep) -> SpaceResponse:
    """Cache size, free disk, cache path."""
    return await models.space()
