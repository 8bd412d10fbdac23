"""What this machine offers a scheduler: GPUs, CPU cores, memory, disk."""

from __future__ import annotations

import os
import shutil
from functools import cache
from pathlib import Path

import psutil
from pydantic import BaseModel, Field


class GpuInfo(BaseModel):
    """One CUDA device."""

    index: int = Field(description="CUDA device index.")
    name: str = Field(description="Device name as the driver reports it.")
    total_memory_bytes: int = Field(description="Device memory in bytes.")


class Hardware(BaseModel):
    """Capacity of this machine."""

    cpu_cores: int = Field(description="CPU cores this process may use.")
    ram_total_bytes: int = Field(description="Physical memory in bytes.")
    ram_available_bytes: int = Field(description="Memory available for new work, in bytes.")
    disk_free_bytes: int = Field(description="Free bytes on the state directory's file system.")
    gpus: list[GpuInfo] = Field(description="CUDA devices; empty without CUDA.")


@cache
def discover_gpus() -> tuple[GpuInfo, ...]:
    """CUDA devices visible to this process (probed once: importing torch is slow)."""
    import torch

    if not torch.cuda.is_available():
        return ()
    return tuple(
        GpuInfo(
            index=i,
            name=torch.cuda.get_device_name(i),
            total_memory_bytes=torch.cuda.get_device_properties(i).total_memory,
        )
        for i in range(torch.cuda.device_count())
    )


def cpu_cores() -> int:
    """Cores in this process's affinity mask (what a container was given)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def discover_hardware(state_dir: Path) -> Hardware:
    """Probe the machine; blocking (first call imports torch), so call it off the event loop."""
    memory = psutil.virtual_memory()
    probe = state_dir if state_dir.exists() else Path(state_dir.anchor or "/")
    return Hardware(
        cpu_cores=cpu_cores(),
        ram_total_bytes=memory.total,
        ram_available_bytes=memory.available,
        disk_free_bytes=shutil.disk_usage(probe).free,
        gpus=list(discover_gpus()),
    )
